"""resnet_study.jobs: the batch-job layer. The `resnet-study` command (cli.py composes every sub-app), sweep specs
and their local / compose / Kubernetes runs, and the benchmarks' harness. Imports core and results_api; nothing
imports it.

    cli.py          the command: train, model, and the sub-apps below, composed explicitly; main()
    options.py      Typer options and output helpers shared by the commands
    results_cli.py  results query|sync|table|compare, serve, report
    sweep.py        sweep specs -> cells (all seeds of one experiment each); what every engine shares
    packing.py      how a cell's runs map to processes and GPUs (one process on a CPU, a process per run on CUDA)
    state.py        each run's and cell's state, from the store
    kubernetes.py   the Kubernetes engine: one Indexed Job per sweep (a pod per cell), the results service
    slurm.py        the Slurm engine: one sbatch job array per sweep (a task per cell), requeues, task states
    slurm.py        the Slurm engine: one sbatch job array per sweep (a task per cell), its requeue policy
    sweep_cli.py    sweep list|cell|local|plan|status|render|submit
    data_cli.py     data push|fetch: a data set in a bucket, for pods with no data volume
    plan.py         `sweep plan`: what a sweep will cost, from measured runs, and how that compared
    bench_cli.py    bench train|processes|stop|api|data
    bench/          the benchmarks: train.py (`bench train`), runs.py (`bench processes|stop`), api.py (`bench api`)
    *.yaml          the shipped sweep specs
"""
