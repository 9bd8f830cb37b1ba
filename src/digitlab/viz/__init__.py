"""Pictures of runs and models: training curves (plots.py) and the one-file HTML report (report.py).

matplotlib is imported inside the functions that draw, so importing this package is cheap.
"""
