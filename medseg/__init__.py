"""Shared code of the medseg pipeline: params, dataset formats, data, training, metrics, plots."""
