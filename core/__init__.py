"""resnet_study.core: the science. The model (He et al. 2016, §4.2), the data sets and their on-device loader, the
augmentation presets, the training recipe, the run record and the results store. Knows nothing of HTTP, Kubernetes
or the CLI; imports neither `resnet_study.jobs` nor `resnet_study.results_api`.

    vocab.py      the study's vocabulary, declared once: data sets, class names, shortcuts, presets, 6n+2
    config.py     ExperimentConfig: one experiment, validated; its run id
    records.py    the run record (runs / epochs / confusion rows): one typed definition, the store's schema
    model.py      ResNet-(6n+2), shortcut A | B | none
    data.py       CIFAR-10 and Fashion-MNIST on disk -> uint8 tensors on the device, batched loader
    augment.py    per-sample batched augmentation presets (paper, report, none)
    train.py      one experiment: schedule, loop, evaluation, checkpoint/resume
    classic.py    the classic PIL/DataLoader pipeline: the scientific control the fast loop is checked against
    store.py      per-run shards and checkpoints, snapshot generations, the read side
    storage.py    one storage layer, a local dir or an s3:// prefix: atomic write, exclusive create, compare-and-swap
    lease.py      one holder at a time (a run's trainer, the store's syncer), stale-aware, on either storage
"""


class StudyError(Exception):
    """A problem the user can fix (bad input, missing data, unwritable dir): shown as one line, exit code 2."""
