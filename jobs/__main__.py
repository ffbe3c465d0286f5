"""`python -m resnet_study.jobs ARGS` = `resnet-study ARGS`."""

from .cli import main

main()
