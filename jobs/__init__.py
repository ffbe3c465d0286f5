"""Batch-job layer: the `resnet-study` CLI and sweep specs."""
