from __future__ import annotations

import pytest

import stpredict as st


@pytest.fixture
def two_patients(crop):
    crop.obs["patient"] = crop.obs["library_id"].map({"C2": "P1", "C3": "P1", "C4": "P2"}).astype("category")
    return crop


def test_leave_one_patient_out_never_shares_patients(two_patients):
    folds = st.tl.make_splits(two_patients)
    assert len(folds) == 2
    for fold in folds:
        assert not set(fold.train_patients) & set(fold.test_patients)
        assert not set(fold.train) & set(fold.test)
    assert sorted(s for f in folds for s in f.test) == ["C2", "C3", "C4"]


def test_group_kfold(two_patients):
    folds = st.tl.make_splits(two_patients, method="group_kfold", n_splits=2)
    assert sorted(len(f.test) for f in folds) == [1, 2]
    with pytest.raises(ValueError, match="n_splits"):
        st.tl.make_splits(two_patients, method="group_kfold", n_splits=5)


def test_leave_one_slide_out_refuses_shared_patient(two_patients):
    with pytest.raises(ValueError, match=r"P1.*both sides"):
        st.tl.make_splits(two_patients, method="leave_one_slide_out")
    folds = st.tl.make_splits(two_patients, method="leave_one_slide_out", allow_shared_patients=True)
    assert [f.test for f in folds] == [["C2"], ["C3"], ["C4"]]


def test_splits_need_patients(crop):
    crop.obs["patient"] = None
    with pytest.raises(ValueError, match="no patient"):
        st.tl.make_splits(crop)
    crop.obs["patient"] = "C"
    with pytest.raises(ValueError, match="at least 2 patients"):
        st.tl.make_splits(crop)
