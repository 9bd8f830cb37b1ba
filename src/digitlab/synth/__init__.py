"""Synthetic training data: realistic uploads, non-digits and pieces of written numbers,
and the functions that mix them into a training set. It belongs to training: nothing below
it (data, models, reading) imports it.
"""
