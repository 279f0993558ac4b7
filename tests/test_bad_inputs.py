"""Bad and unusual inputs: each gets the package's clear error (type and a fragment naming the problem) or a
visible warning, and an input that is refused is left as it was.

Every case is ``setup(ctx) -> call``: the setup builds the input (registering with ``ctx.keep`` what must not
change), and the returned call is what a user would type. Cases that could crash the process (native code)
run in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import stpredict as st

FILES = st.datasets.her2st_crop_files()


@dataclass
class Ctx:
    """Inputs of one case: fresh copies of the bundled crop, a scratch folder, and what must stay unchanged."""

    crop: ad.AnnData
    norm: ad.AnnData
    tmp: Path
    kept: list = field(default_factory=list)

    def keep(self, adata: ad.AnnData) -> ad.AnnData:
        self.kept.append((adata, snapshot(adata)))
        return adata

    def slide(self, adata: ad.AnnData, library_id: str) -> ad.AnnData:
        return adata[adata.obs["library_id"] == library_id].copy()


def snapshot(adata: ad.AnnData) -> tuple:
    """What a refused call must not change: shape, keys of every slot, and the values of X."""
    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X) if adata.X is not None else np.zeros(0)
    return (
        adata.shape,
        tuple(adata.obs.columns),
        tuple(adata.var.columns),
        tuple(adata.layers.keys()),
        tuple(adata.obsm.keys()),
        tuple(adata.obsp.keys()),
        tuple(adata.uns.keys()),
        x.tobytes(),
    )


@dataclass
class Case:
    name: str
    setup: Callable[[Ctx], Callable[[], object]]
    raises: tuple[type[BaseException], str] | None = None
    warns: tuple[type[Warning], str] | None = None


CASES: list[Case] = []


def case(name: str, *, raises=None, warns=None):
    def register(setup):
        CASES.append(Case(name, setup, raises, warns))
        return setup

    return register


def _two_slides(ctx: Ctx, test_slide: str = "C4") -> tuple[ad.AnnData, ad.AnnData]:
    train = ctx.keep(ctx.norm[ctx.norm.obs["library_id"] != test_slide].copy())
    return train, ctx.slide(ctx.norm, test_slide)


def _relabelled(adata: ad.AnnData, old: str, new: str, *, rename_spots: bool) -> ad.AnnData:
    copy = adata[adata.obs["library_id"] == old].copy()
    copy.obs["library_id"] = pd.Categorical([new] * copy.n_obs)
    copy.uns["spatial"] = {new: copy.uns["spatial"][old]}
    if rename_spots:
        copy.obs_names = [n.replace(old, new) for n in copy.obs_names]
    return copy


# --- the rows of the hardening issue -----------------------------------------------------------------------


@case("smooth adaptive_median on one spot", raises=(ValueError, r"needs at least 2 spots per slide.*'C2': 1"))
def _(ctx):
    one = ctx.keep(ctx.norm[:1].copy())
    return lambda: st.pp.smooth(one, method="adaptive_median", show_progress_bar=False)


@case("smooth eags on one spot", raises=(ValueError, r"needs at least 11 spots per slide"))
def _(ctx):
    one = ctx.keep(ctx.norm[:1].copy())
    return lambda: st.pp.smooth(one, method="eags", show_progress_bar=False)


@case("smooth spcs on two spots", raises=(ValueError, r"needs at least 3 spots per slide"))
def _(ctx):
    two = ctx.keep(ctx.norm[:2].copy())
    return lambda: st.pp.smooth(two, method="spcs", show_progress_bar=False)


@case("fit_predict with a one-spot training slide", raises=(ValueError, r"validation spots from 1 training spot"))
def _(ctx):
    train, test = ctx.keep(ctx.norm[:1].copy()), ctx.slide(ctx.norm, "C4")
    return lambda: st.tl.fit_predict(train, test, genes=["ERBB2"])


@case("kNN-graph model with a one-spot slide among its training slides", raises=(ValueError, r"'C3': 1"))
def _(ctx):
    train = ad.concat([ctx.slide(ctx.norm, "C2"), ctx.slide(ctx.norm, "C3")[:1]], uns_merge="unique")
    ctx.keep(train)
    return lambda: st.tl.fit(train, model="spahgc", genes=["ERBB2", "GNAS"], trainer_params={"max_epochs": 1})


@case("normalize an empty AnnData", raises=(ValueError, r"0 spot\(s\) and 0 gene\(s\)"))
def _(ctx):
    return lambda: st.pp.normalize(ad.AnnData(), layer=None)


@case("patch size 0", raises=(ValueError, r"Patch size 0 px.*at least 8 px"))
def _(ctx):
    a = ctx.keep(ctx.crop[:3].copy())
    return lambda: st.pp.image_features(a, size=0, show_progress_bar=False)


@case("negative patch size", raises=(ValueError, r"Patch size -10 px.*at least 8 px"))
def _(ctx):
    a = ctx.keep(ctx.crop[:3].copy())
    return lambda: st.pp.image_features(a, size=-10, show_progress_bar=False)


@case("one-pixel patches", raises=(ValueError, r"Patch size 1 px.*at least 8 px"))
def _(ctx):
    a = ctx.keep(ctx.crop[:3].copy())
    return lambda: st.pp.image_features(a, size=1, show_progress_bar=False)


@case("huge patches are processed a few at a time, with a warning", warns=(st.StPredictWarning, r"5000 px.*large"))
def _(ctx):
    from stpredict.pp._patches import batch_size_for

    assert batch_size_for(5000, 256) == 1  # 286 MiB as floats: one patch per batch instead of 256 (73 GiB)
    a = ctx.crop[:2].copy()
    return lambda: st.pp.image_features(a, size=5000, show_progress_bar=False)


@case("patches too large for any memory", raises=(MemoryError, r"GiB as floats.*check `size` and `unit`"))
def _(ctx):
    a = ctx.keep(ctx.crop[:2].copy())
    return lambda: st.pp.image_features(a, size=40_000, show_progress_bar=False)


@case("extract_patches that would not fit in memory", raises=(MemoryError, r"over half of this machine"))
def _(ctx):
    a = ctx.keep(ctx.crop.copy())
    return lambda: st.pp.extract_patches(a, size=20_000)


@case("comma-separated counts file", raises=(ValueError, r"not tab-separated \(it looks comma-separated"))
def _(ctx):
    path = ctx.tmp / "C2_counts.csv"
    pd.read_csv(FILES["C2"]["counts"], sep="\t", index_col=0).iloc[:, :500].to_csv(path)
    return lambda: st.io.read_st(path, FILES["C2"]["spots"], FILES["C2"]["image"])


@case("NaN in X, then normalize", raises=(ValueError, r"1 NaN or infinite value.*spot 'C2_26x18'"))
def _(ctx):
    a = ctx.crop.copy()
    a.X = a.X.toarray().astype(float)
    a.X[0, 5] = np.nan
    ctx.keep(a)
    return lambda: st.pp.normalize(a, layer=None)


@case("inf in counts, then normalize", raises=(ValueError, r"NaN or infinite value"))
def _(ctx):
    a = ctx.crop.copy()
    counts = a.layers["counts"].toarray().astype(float)
    counts[3, 2] = np.inf
    a.layers["counts"] = counts
    ctx.keep(a)
    return lambda: st.pp.normalize(a)


@case("spot coordinates shifted off the image", raises=(ValueError, r"No spot of slide 'C2' lies on its image"))
def _(ctx):
    a = ctx.slide(ctx.crop, "C2")
    a.obsm["spatial"] = a.obsm["spatial"] + 5000
    ctx.keep(a)
    return lambda: st.pp.image_features(a, show_progress_bar=False)


@case("spot coordinates scaled", warns=(st.StPredictWarning, r"spots of slide 'C2' lie outside its image"))
def _(ctx):
    a = ctx.slide(ctx.crop, "C2")
    a.obsm["spatial"] = a.obsm["spatial"] * 3
    return lambda: st.pp.image_features(a, show_progress_bar=False)


@case("x and y swapped", warns=(st.StPredictWarning, r"8 of 72 spots of slide 'C2' lie outside"))
def _(ctx):
    a = ctx.slide(ctx.crop, "C2")
    a.obsm["spatial"] = a.obsm["spatial"][:, ::-1].copy()
    return lambda: st.pp.image_features(a, show_progress_bar=False)


@case("spots on empty glass", warns=(st.StPredictWarning, r"100% of the patches of slide 'C2' show almost no tissue"))
def _(ctx):
    a = ctx.slide(ctx.crop, "C2")
    glass = ctx.tmp / "glass.png"
    from PIL import Image

    Image.fromarray(np.full((2400, 2700, 3), 238, np.uint8)).save(glass)
    a.uns["spatial"]["C2"]["metadata"]["source_image_path"] = str(glass)
    return lambda: st.pp.image_features(a, show_progress_bar=False)


@case("a training slide relabelled as the test slide", raises=(ValueError, r"71 test spot name\(s\)"))
def _(ctx):
    train, _ = _two_slides(ctx)
    fake = _relabelled(ctx.norm, "C3", "C9", rename_spots=False)
    return lambda: st.tl.fit_predict(train, fake, genes=["ERBB2"])


@case("a relabelled training slide with renamed spots", raises=(ValueError, r"\{'C9': 'C3'\}.*same image"))
def _(ctx):
    train, _ = _two_slides(ctx)
    fake = _relabelled(ctx.norm, "C3", "C9", rename_spots=True)
    return lambda: st.tl.fit_predict(train, fake, genes=["ERBB2"])


@case(
    "a saved model predicting a relabelled training slide",
    warns=(st.StPredictWarning, r"\{'C9': 'C3'\}.*training slide's image.*in-sample"),
)
def _(ctx):
    train, _ = _two_slides(ctx)
    path = st.tl.fit(train, genes=["ERBB2"]).save(ctx.tmp / "model.stpredict")
    fake = ctx.keep(_relabelled(ctx.norm, "C3", "C9", rename_spots=True))
    return lambda: st.tl.load_model(path).predict(fake)


@case("identical obs_names in train and test", raises=(ValueError, r"test spot name\(s\) are also training"))
def _(ctx):
    train, test = _two_slides(ctx)
    test.obs_names = train.obs_names[: test.n_obs]
    return lambda: st.tl.fit_predict(train, test, genes=["ERBB2"])


@case("cross-validation over a relabelled copy", raises=(ValueError, r"show the same image with the same spot"))
def _(ctx):
    both = ad.concat([ctx.norm, _relabelled(ctx.norm, "C3", "C9", rename_spots=True)], uns_merge="unique")
    both.obs["library_id"] = both.obs["library_id"].astype("category")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", st.StPredictWarning)
        folds = st.tl.make_splits(both, method="leave_one_slide_out", allow_shared_patients=True)
    return lambda: st.tl.cross_validate(both, splits=folds, genes=["ERBB2"], show_progress_bar=False)


@case("normalize an already normalised layer", warns=(st.StPredictWarning, r"written by st.pp.normalize"))
def _(ctx):
    return lambda: st.pp.normalize(ctx.norm, layer="log1p", key_added="twice")


@case("normalize log values that stpredict did not write", warns=(st.StPredictWarning, r"look log-transformed"))
def _(ctx):
    a = ctx.crop.copy()
    a.layers["mine"] = np.log1p(a.layers["counts"].toarray())
    return lambda: st.pp.normalize(a, layer="mine")


@case("evaluate log predictions against raw counts", warns=(st.StPredictWarning, r"'log1p' scale.*'counts' scale"))
def _(ctx):
    train, test = _two_slides(ctx)
    st.tl.fit_predict(train, test, genes=["ERBB2", "GNAS"])
    return lambda: st.tl.evaluate(test, layer_pred="pred_ridge", layer_true="counts")


@case("a split method typo", raises=(ValueError, r"Unknown split method 'loso'"))
def _(ctx):
    return lambda: st.tl.make_splits(ctx.keep(ctx.crop), method="loso")


@case("patient splits with one patient", raises=(ValueError, r"at least 2 patients.*leave_one_slide_out"))
def _(ctx):
    return lambda: st.tl.make_splits(ctx.keep(ctx.crop))


@case("integer slide ids with integer uns['spatial'] keys work")
def _(ctx):
    a = ctx.crop.copy()
    a.obs["library_id"] = a.obs["library_id"].map({"C2": 2, "C3": 3, "C4": 4}).astype(int)
    a.uns["spatial"] = {int(k[1]): v for k, v in a.uns["spatial"].items()}

    def call():
        st.pp.image_features(a, show_progress_bar=False)
        assert a.obsm["X_handcrafted"].shape == (213, 44)

    return call


# --- neighbours: other arguments and functions -------------------------------------------------------------


@case("normalize negative values", raises=(ValueError, r"negative values: pass raw counts"))
def _(ctx):
    a = ctx.crop.copy()
    a.X = -a.X.toarray().astype(float)
    return lambda: st.pp.normalize(ctx.keep(a), layer=None)


@case("normalize a missing layer", raises=(KeyError, r"Layer 'raw' with raw counts not found"))
def _(ctx):
    return lambda: st.pp.normalize(ctx.keep(ctx.crop), layer="raw")


@case("normalize with an unknown method", raises=(ValueError, r"Unknown method 'log2'"))
def _(ctx):
    return lambda: st.pp.normalize(ctx.keep(ctx.crop), method="log2")


@case("smooth with an unknown method", raises=(ValueError, r"Unknown smoothing method 'gauss'"))
def _(ctx):
    return lambda: st.pp.smooth(ctx.keep(ctx.norm), method="gauss")


@case("smooth with a parameter of another method", raises=(TypeError, r"Unknown parameter\(s\) \['tau_p'\]"))
def _(ctx):
    return lambda: st.pp.smooth(ctx.keep(ctx.norm), method="8n", tau_p=4)


@case("smooth infinite values", raises=(ValueError, r"infinite values"))
def _(ctx):
    a = ctx.norm.copy()
    a.layers["log1p"][0, 0] = np.inf
    return lambda: st.pp.smooth(ctx.keep(a), method="8n", show_progress_bar=False)


@case("smooth without grid coordinates", raises=(KeyError, r"lacks the grid coordinate column"))
def _(ctx):
    a = ctx.norm.copy()
    del a.obs["array_row"]
    return lambda: st.pp.smooth(ctx.keep(a), method="8n")


@case("grid graph without grid coordinates", raises=(KeyError, r"array neighbours .*'knn' needs no array"))
def _(ctx):
    a = ctx.norm.copy()
    del a.obs["array_col"]
    return lambda: st.pp.spatial_graph(ctx.keep(a), kind="grid")


@case("select_genes with an unknown method", raises=(ValueError, r"Unknown gene selection method 'variance'"))
def _(ctx):
    return lambda: st.pp.select_genes(ctx.keep(ctx.crop), method="variance")


@case("select_genes with n_genes=0", raises=(ValueError, r"`n_genes` must be positive"))
def _(ctx):
    return lambda: st.pp.select_genes(ctx.keep(ctx.crop), n_genes=0)


@case("select_genes top_expressed on log values", raises=(ValueError, r"needs raw counts"))
def _(ctx):
    return lambda: st.pp.select_genes(ctx.keep(ctx.norm), layer="log1p")


@case("select_genes hvg on a slide of 10 spots", raises=(ValueError, r"method='hvg' on slide 'C2': 10 spot"))
def _(ctx):
    return lambda: st.pp.select_genes(ctx.keep(ctx.crop[:10].copy()), method="hvg", n_genes=20)


@case("select_genes on unknown training slides", raises=(KeyError, r"C7"))
def _(ctx):
    return lambda: st.pp.select_genes(ctx.keep(ctx.crop), train=["C7"])


@case("image_features with an unknown unit", raises=(ValueError, r"Unknown size unit 'mm'"))
def _(ctx):
    return lambda: st.pp.image_features(ctx.keep(ctx.crop[:3].copy()), size=1, unit="mm", show_progress_bar=False)


@case("image_features with an unknown method", raises=(ValueError, r"handcraftd"))
def _(ctx):
    return lambda: st.pp.image_features(ctx.keep(ctx.crop[:3].copy()), method="handcraftd")


@case("NaN spot coordinates", raises=(ValueError, r"missing or infinite coordinates for spot\(s\) \['C2_26x18'\]"))
def _(ctx):
    a = ctx.crop[:5].copy()
    a.obsm["spatial"] = a.obsm["spatial"].astype(float)
    a.obsm["spatial"][0, 0] = np.nan
    return lambda: st.pp.image_features(ctx.keep(a), show_progress_bar=False)


@case("no spot coordinates", raises=(KeyError, r"obsm\['spatial'\] with the spot centres"))
def _(ctx):
    a = ctx.crop[:5].copy()
    del a.obsm["spatial"]
    return lambda: st.pp.image_features(ctx.keep(a), show_progress_bar=False)


@case("a size in microns without a pixel size", raises=(KeyError, r"no scalefactors\['microns_per_pixel'\]"))
def _(ctx):
    a = ctx.crop[:5].copy()
    del a.uns["spatial"]["C2"]["scalefactors"]["microns_per_pixel"]
    return lambda: st.pp.image_features(ctx.keep(a), size=100, unit="um", show_progress_bar=False)


@case("not an AnnData", raises=(TypeError, r"must be an AnnData, got DataFrame"))
def _(ctx):
    return lambda: st.pp.normalize(ctx.crop.to_df())


@case("missing slide names", raises=(ValueError, r"obs\['library_id'\] has 1 missing value"))
def _(ctx):
    a = ctx.norm.copy()
    a.obs["library_id"] = a.obs["library_id"].astype(object)
    a.obs.iloc[0, a.obs.columns.get_loc("library_id")] = None
    return lambda: st.tl.fit(ctx.keep(a), genes=["ERBB2"])


@case("fit an unknown model", raises=(ValueError, r"Unknown model 'ridgee'.*Did you mean 'ridge'"))
def _(ctx):
    return lambda: st.tl.fit(ctx.keep(ctx.norm), model="ridgee")


@case("fit genes=[]", raises=(ValueError, r"genes=\[\] asks for no genes"))
def _(ctx):
    return lambda: st.tl.fit(ctx.keep(ctx.norm), genes=[])


@case("fit a gene that is not measured", raises=(KeyError, r"not found in adata_train.var_names.*NOTAGENE"))
def _(ctx):
    return lambda: st.tl.fit(ctx.keep(ctx.norm), genes=["ERBB2", "NOTAGENE"])


@case("fit a gene listed twice", raises=(ValueError, r"\['ERBB2'\] more than once"))
def _(ctx):
    return lambda: st.tl.fit(ctx.keep(ctx.norm), genes=["ERBB2", "ERBB2"])


@case("fit with a misspelled model parameter", raises=(TypeError, r"alpha"))
def _(ctx):
    return lambda: st.tl.fit(ctx.keep(ctx.norm), genes=["ERBB2"], model_params={"alpha": 1.0})


@case("fit a missing target layer", raises=(KeyError, r"Layer 'log1p' not found"))
def _(ctx):
    return lambda: st.tl.fit(ctx.keep(ctx.crop), genes=["ERBB2"])


@case("fit_predict with a slide on both sides", raises=(ValueError, r"\['C3'\] are in both adata_train and adata_test"))
def _(ctx):
    train, _ = _two_slides(ctx)
    return lambda: st.tl.fit_predict(train, ctx.slide(ctx.norm, "C3"), genes=["ERBB2"])


@case("predict a slide whose genes are named otherwise", raises=(ValueError, r"shares none of the 1 predicted"))
def _(ctx):
    train, test = _two_slides(ctx)
    predictor = st.tl.fit(train, genes=["ERBB2"])
    test.var_names = [f"ENSG{i:011d}" for i in range(test.n_vars)]
    return lambda: predictor.predict(ctx.keep(test))


@case("cross_validate a fold naming an unknown slide", raises=(KeyError, r"names slide\(s\) \['C7'\]"))
def _(ctx):
    fold = st.tl._splits.Fold("bad", ["C2", "C3"], ["C7"])
    return lambda: st.tl.cross_validate(ctx.keep(ctx.norm), splits=[fold], genes=["ERBB2"])


@case("cross_validate a fold testing a training slide", raises=(ValueError, r"\['C3'\] in both its training"))
def _(ctx):
    fold = st.tl._splits.Fold("bad", ["C2", "C3"], ["C3", "C4"])
    return lambda: st.tl.cross_validate(ctx.keep(ctx.norm), splits=[fold], genes=["ERBB2"])


@case("cross_validate with no folds", raises=(ValueError, r"splits is empty"))
def _(ctx):
    return lambda: st.tl.cross_validate(ctx.keep(ctx.norm), splits=[], genes=["ERBB2"])


@case("group_kfold with too many folds", raises=(ValueError, r"`n_splits` must be between 2"))
def _(ctx):
    a = ctx.crop.copy()
    a.obs["patient"] = a.obs["library_id"].astype(str)
    return lambda: st.tl.make_splits(ctx.keep(a), method="group_kfold", n_splits=5)


@case("evaluate missing predictions", raises=(KeyError, r"No predictions 'pred_mlp': neither adata.obsm"))
def _(ctx):
    return lambda: st.tl.evaluate(ctx.keep(ctx.norm), layer_pred="pred_mlp")


@case("evaluate an all-NaN prediction layer", raises=(ValueError, r"holds no prediction \(all NaN\)"))
def _(ctx):
    a = ctx.norm.copy()
    a.layers["pred"] = np.full(a.shape, np.nan, dtype=np.float32)
    return lambda: st.tl.evaluate(ctx.keep(a), layer_pred="pred")


@case("plot a gene that is not there", raises=(KeyError, r"NOTAGENE"))
def _(ctx):
    return lambda: st.pl.prediction(ctx.keep(ctx.norm), ["NOTAGENE"], layer_pred="log1p", show=False)


@case("verbosity out of range", raises=(ValueError, r"st.settings.verbosity must be one of \[0, 1, 2, 3\]"))
def _(ctx):
    def call():
        st.settings.verbosity = 5

    return call


# --- files ---------------------------------------------------------------------------------------------------


@case("counts file that does not exist", raises=(FileNotFoundError, r"does not exist"))
def _(ctx):
    return lambda: st.io.read_st(ctx.tmp / "missing.tsv", FILES["C2"]["spots"], FILES["C2"]["image"])


@case("counts with a gene column twice", raises=(ValueError, r"Duplicate gene names"))
def _(ctx):
    table = pd.read_csv(FILES["C2"]["counts"], sep="\t", index_col=0).iloc[:, :50]
    path = ctx.tmp / "dup.tsv"
    table.rename(columns={table.columns[1]: table.columns[0]}).to_csv(path, sep="\t")
    return lambda: st.io.read_st(path, FILES["C2"]["spots"], FILES["C2"]["image"])


@case("an image that does not exist", raises=(FileNotFoundError, r"does not exist"))
def _(ctx):
    return lambda: st.io.read_st(FILES["C2"]["counts"], FILES["C2"]["spots"], ctx.tmp / "none.jpg")


@case("a truncated JPEG", raises=(ValueError, r"truncated or corrupt"))
def _(ctx):
    path = ctx.tmp / "C2.jpg"
    data = Path(FILES["C2"]["image"]).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return lambda: st.io.read_st(FILES["C2"]["counts"], FILES["C2"]["spots"], path)


@case("a truncated pyramidal TIFF", raises=(ValueError, r"truncated or corrupt"))
def _(ctx):
    from PIL import Image

    image = np.asarray(Image.open(FILES["C2"]["image"]).convert("RGB"))
    full = st.io.write_pyramidal_tiff(image, ctx.tmp / "full.tif", mpp=0.5, compression="zlib")
    path = ctx.tmp / "cut.tif"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 3])

    def call():
        slide = st.io.read_wsi(path, library_id="cut", mpp=0.5, backend="tiffslide")
        st.pp.image_features(slide, show_progress_bar=False)

    return call


@case("a truncated .h5ad in a HEST sample", raises=(ValueError, r"truncated or corrupt.*download it again"))
def _(ctx):
    for folder in ("st", "wsis", "metadata"):
        (ctx.tmp / folder).mkdir()
    ctx.slide(ctx.crop, "C3").write_h5ad(ctx.tmp / "st" / "S1.h5ad")
    data = (ctx.tmp / "st" / "S1.h5ad").read_bytes()
    (ctx.tmp / "st" / "S1.h5ad").write_bytes(data[: len(data) // 2])
    st.io.write_pyramidal_tiff(np.full((600, 600, 3), 200, np.uint8), ctx.tmp / "wsis" / "S1.tif", mpp=0.5)
    (ctx.tmp / "metadata" / "S1.json").write_text('{"pixel_size_um_estimated": 0.5}')
    return lambda: st.io.read_hest(ctx.tmp, "S1")


@case("a corrupted model file", raises=(ValueError, r"is not a model saved by stpredict"))
def _(ctx):
    train, _ = _two_slides(ctx)
    path = st.tl.fit(train, genes=["ERBB2"]).save(ctx.tmp / "model.stpredict")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return lambda: st.tl.load_model(path)


@case("a pickle given as a model", raises=(ValueError, r"never unpickles"))
def _(ctx):
    import pickle

    path = ctx.tmp / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return lambda: st.tl.load_model(path)


@case("a download that does not match its checksum", raises=(ValueError, r"Checksum mismatch for x/C2.tsv.gz"))
def _(ctx):
    def half_download(url, output_file, pooch):  # a server that cuts the connection half-way
        data = Path(FILES["C2"]["counts"]).read_bytes()
        Path(output_file).write_bytes(data[: len(data) // 2])

    digest = __import__("hashlib").sha256(Path(FILES["C2"]["counts"]).read_bytes()).hexdigest()

    def call():
        try:
            st.datasets.fetch("x/C2.tsv.gz", "https://example.org/C2.tsv.gz", digest, cache_dir=ctx.tmp,
                              downloader=half_download)  # fmt: skip
        finally:
            assert not (ctx.tmp / "x" / "C2.tsv.gz").exists()  # nothing half-written is left in the cache

    return call


# --- the runner ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_bad_input(bad: Case, crop, crop_norm, tmp_path):
    ctx = Ctx(crop, crop_norm, tmp_path)
    call = bad.setup(ctx)
    if bad.raises is not None:
        with pytest.raises(bad.raises[0], match=bad.raises[1]) as info:
            call()
        assert len(str(info.value)) < 1200, "an error message should be readable, not a data dump"
        for adata, before in ctx.kept:
            assert snapshot(adata) == before, "a refused call must leave its input unchanged"
    elif bad.warns is not None:
        with pytest.warns(bad.warns[0], match=bad.warns[1]):
            call()
    else:
        call()


def test_the_suite_covers_at_least_50_cases():
    assert len(CASES) + len(SUBPROCESS_CASES) >= 50


# Native code (scikit-misc's loess under scanpy's seurat_v3) used to kill the interpreter on these inputs: run
# them in a subprocess so a crash fails the test instead of the test run.
SUBPROCESS_CASES = {
    "hvg on one spot": ("adata[:1].copy()", "needs at least 30"),
    "hvg on five spots": ("adata[:5].copy()", "needs at least 30"),
}


@pytest.mark.parametrize("name", list(SUBPROCESS_CASES))
def test_bad_input_that_used_to_crash(name):
    subset, fragment = SUBPROCESS_CASES[name]
    script = textwrap.dedent(f"""
        import stpredict as st
        adata = st.datasets.her2st_crop()
        try:
            st.pp.select_genes({subset}, method="hvg", n_genes=50)
        except ValueError as error:
            print("REFUSED:", error)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the process died (code {done.returncode}): {done.stderr[-2000:]}"
    assert "REFUSED:" in done.stdout and fragment in done.stdout


def test_package_warnings_and_logs_reach_the_user_by_default():
    script = textwrap.dedent("""
        import logging
        import stpredict as st
        from stpredict._logging import logger
        adata = st.datasets.her2st_crop()
        adata.obs["patient"] = "C"
        st.tl.make_splits(adata, method="leave_one_slide_out", allow_shared_patients=True)
        logger.info("an informational line")
        st.settings.verbosity = 2
        logger.info("shown at verbosity 2")
        st.settings.verbosity = 0
        st.tl.make_splits(adata, method="leave_one_slide_out", allow_shared_patients=True)
        logger.warning("silenced at verbosity 0")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("StPredictWarning: leave_one_slide_out: patient(s) ['C']") == 1
    assert "an informational line" not in done.stderr and "INFO: shown at verbosity 2" in done.stderr
    assert "silenced" not in done.stderr


def test_an_interrupted_save_leaves_no_file(crop_norm, tmp_path, monkeypatch):
    import safetensors.numpy

    train = crop_norm[crop_norm.obs["library_id"] != "C4"].copy()
    predictor = st.tl.fit(train, genes=["ERBB2"])
    good = predictor.save(tmp_path / "model.stpredict")
    before = good.read_bytes()

    def crash(arrays, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        predictor.save(good)
    assert good.read_bytes() == before  # the previous model survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.stpredict"]  # no partial file left
    with pytest.raises(KeyboardInterrupt):
        predictor.save(tmp_path / "new.stpredict")
    assert not (tmp_path / "new.stpredict").exists()


def test_spots_of_one_section_on_the_image_of_another_are_flagged():
    """Full HER2ST sections (the bundled crops are cut around the spots, so any image fits them)."""
    from helpers import shared

    sections = st.datasets.her2st(["C2", "C3"], path=shared("her2st"))
    c2 = sections[sections.obs["library_id"] == "C2"].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", st.StPredictWarning)  # on its own image: nothing to warn about
        st.pp.image_features(c2, show_progress_bar=False)
    c2.uns["spatial"]["C2"]["metadata"]["source_image_path"] = sections.uns["spatial"]["C3"]["metadata"][
        "source_image_path"
    ]
    with pytest.warns(st.StPredictWarning, match=r"of the patches of slide 'C2' show almost no tissue"):
        st.pp.image_features(c2, show_progress_bar=False)


def test_repeated_gene_names_predict_and_say_what_to_do_where_ambiguous(crop):
    st.pp.normalize(crop)
    train, test = crop[crop.obs.library_id != "C4"].copy(), crop[crop.obs.library_id == "C4"].copy()
    predictor = st.tl.fit(train, genes=["ERBB2", "GNAS"])
    names = test.var_names.tolist()
    erbb2 = names.index("ERBB2")
    names[0] = "ERBB2"  # Space Ranger output before var_names_make_unique
    test.var_names = names
    predictor.predict(test, full_layer=True)  # prediction reads no expression: works
    layer = test.layers["pred_ridge"]
    np.testing.assert_array_equal(layer[:, 0], layer[:, erbb2])
    np.testing.assert_array_equal(layer[:, 0], test.obsm["pred_ridge"]["ERBB2"].to_numpy())
    with pytest.raises(ValueError, match=r"appear more than once.*var_names_make_unique"):
        st.tl.evaluate(test, layer_pred="pred_ridge")
    with pytest.raises(ValueError, match="appear more than once"):
        st.tl.fit(test, genes=["ERBB2"])
