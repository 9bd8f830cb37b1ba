"""Reading a written number: one entry, :func:`read_number`.

``segment`` finds the ink groups of a line, ``lattice`` cuts them into candidate pieces that
the digit model scores and keeps the most confident split, and ``lines`` is the CTC line
model whose likelihood re-ranks that split where digits overlap. Needs numpy, scipy, Pillow
and (for the line model) onnxruntime; never torch.
"""

from digitlab.numbers.lattice import Reading, Scorer, read_number
from digitlab.numbers.lines import LINE_FILE, LineReader

__all__ = ["LINE_FILE", "LineReader", "Reading", "Scorer", "read_number"]
