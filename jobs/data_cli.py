"""`resnet-study data push|fetch`: a data set in a bucket, so pods on a cluster with only object storage need no
data volume.

    resnet-study data push fashion-mnist s3://my-bucket/datasets      # upload what `train` reads here
    resnet-study data fetch fashion-mnist s3://my-bucket/datasets     # fetch it into this machine's cache, verified
    resnet-study data push ./my-images s3://my-bucket/datasets        # your folder, as its decoded arrays + manifest
"""

from __future__ import annotations

from typing import Optional

import typer

from ..core import datasets
from .options import DataDir

app = typer.Typer(help="Data sets in a bucket: push a local one, fetch one into the cache.", no_args_is_help=True)
Dataset = typer.Argument(..., help=f"{', '.join(datasets.BUILTINS)}, or your own: a folder or .npz (push), its "
                                   f"stored name such as my-images@3fa2c1d0 (fetch).")
Bucket = typer.Argument(..., help="s3://bucket/prefix: what --data-dir of `train` and `sweep` then names.")


@app.command("push")
def push(dataset: str = Dataset, dest: str = Bucket, data_dir: Optional[str] = DataDir):
    """Upload the data set `train` reads from --data-dir (or Debian's Fashion-MNIST) to DEST in the layout train
    expects, each file one PUT, then its manifest (file SHA-256s and the data fingerprint runs record). Your own
    folder or .npz goes up decoded (<name>@<hash>.npz); train on it by that name with --data-dir DEST."""
    from ..core import data  # torch: imported only by the commands that need it

    dataset = datasets.check_name(dataset)
    manifest = data.push(dataset, data_dir, dest)
    print(f"{dataset}: {len(manifest['files'])} files in {dest.rstrip('/')}/ (data fingerprint "
          f"{manifest['fingerprint']}); train with --data-dir {dest}")


@app.command("fetch")
def fetch(dataset: str = Dataset, source: str = Bucket):
    """Fetch the data set from SOURCE into this machine's cache and check every file against its manifest (train
    does this itself; useful to warm a node or check a bucket)."""
    from ..core import data

    dataset = datasets.check_name(dataset)
    folder = data.local_data_dir(dataset, source)
    files = data.data_files(dataset, folder)
    print(f"{dataset}: {len(files)} files verified in {folder}")
