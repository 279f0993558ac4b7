"""Run by ``tests/test_ddp.py`` (Lightning's DDP launcher re-runs this script once per extra rank).

Fits an MLP on the bundled crop, on one process or with DDP on two CPU processes (gloo), and prints the
validation score from rank 0.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import stpredict as st


def main() -> None:
    warnings.simplefilter("ignore")
    mode = sys.argv[1]
    adata = st.datasets.her2st_crop()
    st.pp.normalize(adata)
    st.pp.image_features(adata, show_progress_bar=False)
    st.pp.select_genes(adata, n_genes=30)
    trainer = {"strategy": "ddp", "devices": 2, "accelerator": "cpu"} if mode == "ddp" else {}
    predictor = st.tl.fit(
        adata,
        model="mlp",
        use_rep="X_handcrafted",
        model_params={"max_epochs": 40, "patience": 40, "batch_size": 32},
        trainer_params=trainer,
    )
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        print(json.dumps({"mode": mode, "score": predictor.validation.score}))


if __name__ == "__main__":  # pytest's doctest collection imports this file: do nothing then
    main()
