"""The data layer: MNIST's files, users' own digits in every layout, datasets.

This file stays free of imports: the CLI reads ``SOURCE_HELP`` for its help text without
loading numpy."""

SOURCE_HELP = (
    "train, train50k, val, test; a folder (0/-9/ subfolders or INDEX_LABEL.png files, "
    "FOLDER:SPLIT for an export); a Caffe .txt or MXNet .lst list; a Kaggle or path,label "
    ".csv; mnist.pkl.gz:SPLIT; mnist.npz:SPLIT; an IDX file; a .parquet; a Caffe LMDB; a .rec"
)
