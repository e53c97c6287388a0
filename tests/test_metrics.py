"""Re-ID metrics: hand-computed cases, a literal transcription of torchreid's eval_market1501, chunking."""

import numpy as np
import pytest
import torch

from dcsnas.errors import DcsnasError
from dcsnas.metrics import MetricsInputError, evaluate_features, evaluate_rank, pairwise_distance
from dcsnas.metrics.rank import ranks_in_rows


def reference_market(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """torchreid's eval_market1501, one query at a time, with a stable argsort, float64 CMC, the AGW INP, and the
    CMC padded with its last value where fewer than max_rank items remain (where torchreid fails)."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(len(q_pids)):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1
        cmc = np.concatenate([cmc, np.full(max(0, max_rank - len(cmc)), cmc[-1])])
        all_cmc.append(cmc[:max_rank])
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)]) * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
        hardest = np.flatnonzero(raw_cmc)[-1]
        all_inp.append(num_rel / (hardest + 1.0))
    assert all_ap, "no valid query"
    return np.asarray(all_cmc, dtype=np.float64).sum(0) / len(all_ap), np.mean(all_ap), np.mean(all_inp), len(all_ap)


# Gallery shared by the hand-computed cases: (pid, camid) per item.
G_PIDS = np.array([1, 2, 1, 0, 1, 3])
G_CAMS = np.array([0, 1, 1, 2, 2, 0])


def test_single_query_by_hand():
    # Query pid 1, cam 0. Item 0 (pid 1, cam 0) is junk and removed. Remaining, nearest first:
    # 1 (pid 2: wrong), 2 (pid 1, cam 1: match), 3 (pid 0 distractor: wrong), 4 (pid 1, cam 2: match), 5 (wrong).
    # Matches at ranks 2 and 4: CMC = [0, 1, 1, 1, 1]; AP = (1/2 + 2/4) / 2 = 0.5; INP = 2 / 4 = 0.5.
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    r = evaluate_rank(d, np.array([1]), G_PIDS, np.array([0]), G_CAMS, max_rank=5)
    assert r["cmc"].tolist() == [0, 1, 1, 1, 1]
    assert r["mAP"] == pytest.approx(0.5, abs=1e-15)
    assert r["mINP"] == pytest.approx(0.5, abs=1e-15)
    assert r["num_valid_queries"] == 1


def test_fewer_remaining_items_than_max_rank_pads_the_cmc():
    # Same query: 5 items remain, so ranks 6..8 repeat the last value, 1.
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    r = evaluate_rank(d, np.array([1]), G_PIDS, np.array([0]), G_CAMS, max_rank=8)
    assert r["cmc"].tolist() == [0, 1, 1, 1, 1, 1, 1, 1]
    assert len(r["cmc"]) == 8


def test_ties_are_broken_by_gallery_index():
    # Query pid 1, cam 0 against 4 items; all at 1.0 except item 2 (pid 3) at 0.5.
    # Stable order: 2 (0.5, wrong), then the ties by index: 0 (pid 2, wrong), 1 (match), 3 (match).
    # Matches at ranks 3, 4: CMC = [0, 0, 1, 1]; AP = (1/3 + 2/4) / 2 = 5/12; INP = 2/4.
    d = np.array([[1.0, 1.0, 0.5, 1.0]])
    g_pids, g_cams = np.array([2, 1, 3, 1]), np.array([1, 1, 1, 2])
    r = evaluate_rank(d, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=4)
    assert r["cmc"].tolist() == [0, 0, 1, 1]
    assert r["mAP"] == pytest.approx(5 / 12, rel=1e-15)
    assert r["mINP"] == pytest.approx(0.5, rel=1e-15)
    # The same distances with the wrong tied item moved from index 0 to index 3: the ties now order
    # match (0), match (1), wrong (3), so the matches are at ranks 2, 3 -> AP = (1/2 + 2/3) / 2, INP = 2/3.
    r = evaluate_rank(d, np.array([1]), np.array([1, 1, 3, 2]), np.array([0]), np.array([1, 2, 1, 1]), max_rank=4)
    assert r["cmc"].tolist() == [0, 1, 1, 1]
    assert r["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2, rel=1e-15)
    assert r["mINP"] == pytest.approx(2 / 3, rel=1e-15)


def test_invalid_queries_are_skipped():
    # q0: as test_single_query_by_hand -> CMC [0, 1, 1, 1, 1], AP 0.5, INP 0.5.
    # q1: pid 3, cam 0: its only gallery image (item 5) has cam 0 -> junk -> no match -> skipped.
    # q2: pid 2, cam 0: order 2, 5, 4, 3, 1, 0 -> its match (item 1) at rank 5 -> CMC [0, 0, 0, 0, 1], AP = INP = 1/5.
    # q3: pid 9 is not in the gallery -> skipped.
    d = np.array([
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        [0.9, 0.8, 0.1, 0.7, 0.6, 0.5],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    ])
    r = evaluate_rank(d, np.array([1, 3, 2, 9]), G_PIDS, np.array([0, 0, 0, 0]), G_CAMS, max_rank=5)
    assert r["num_valid_queries"] == 2
    assert r["cmc"].tolist() == [0, 0.5, 0.5, 0.5, 1]
    assert r["mAP"] == pytest.approx((0.5 + 0.2) / 2, rel=1e-15)
    assert r["mINP"] == pytest.approx((0.5 + 0.2) / 2, rel=1e-15)


def test_minp_differs_from_map():
    # Query pid 1, cam 0; 10 items, matches (pid 1, cam 1) at distances 0.1, 0.2 and 1.0, 7 wrong ones between.
    # Matches at ranks 1, 2, 10: AP = (1/1 + 2/2 + 3/10) / 3 = 2.3 / 3; INP = 3 / 10 (hardest match at rank 10).
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]])
    g_pids = np.array([1, 1, 2, 3, 4, 5, 6, 7, 0, 1])
    r = evaluate_rank(d, np.array([1]), g_pids, np.array([0]), np.ones(10, dtype=np.int64), max_rank=3)
    assert r["cmc"].tolist() == [1, 1, 1]
    assert r["mAP"] == pytest.approx(2.3 / 3, rel=1e-15)
    assert r["mINP"] == pytest.approx(0.3, rel=1e-15)


def test_distractors_never_match():
    # Query pid 1, cam 0; the nearest items are distractors (pid 0) from other cameras, the match comes third.
    d = np.array([[0.1, 0.2, 0.3]])
    r = evaluate_rank(d, np.array([1]), np.array([0, 0, 1]), np.array([0]), np.array([1, 2, 1]), max_rank=3)
    assert r["cmc"].tolist() == [0, 0, 1]
    assert r["mAP"] == pytest.approx(1 / 3, rel=1e-15)


def test_no_valid_query_is_an_error():
    d = np.array([[0.1, 0.2]])
    with pytest.raises(MetricsInputError, match="no valid query"):
        evaluate_rank(d, np.array([1]), np.array([1, 2]), np.array([0]), np.array([0, 1]))


def _random_problem(rng, n_q, n_g, n_ids, n_cams, levels):
    """Labels and an integer-valued distance matrix with only ``levels`` distinct values: many ties."""
    q_pids, g_pids = rng.integers(0, n_ids, n_q), rng.integers(0, n_ids, n_g)
    q_cams, g_cams = rng.integers(0, n_cams, n_q), rng.integers(0, n_cams, n_g)
    d = rng.integers(0, levels, (n_q, n_g)).astype(np.float64)
    return d, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("trial", range(30))
def test_equals_literal_reference_on_random_inputs_with_ties(trial):
    rng = np.random.default_rng(trial)
    n_q, n_g = int(rng.integers(1, 40)), int(rng.integers(5, 120))
    d, q_pids, g_pids, q_cams, g_cams = _random_problem(
        rng, n_q, n_g, int(rng.integers(2, 12)), int(rng.integers(1, 4)), int(rng.integers(1, 6))
    )
    q_pids[0], q_cams[0], g_pids[0], g_cams[0] = 7, 0, 7, 1  # at least one valid query
    max_rank = int(rng.integers(1, n_g + 20))
    ref_cmc, ref_map, ref_minp, ref_valid = reference_market(d, q_pids, g_pids, q_cams, g_cams, max_rank)
    for chunk in (None, 1, 3):
        r = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank, chunk_size=chunk)
        np.testing.assert_array_equal(r["cmc"], ref_cmc)  # counts / num_valid: exact
        assert r["mAP"] == pytest.approx(ref_map, rel=1e-12, abs=1e-15)  # same terms, another summation order
        assert r["mINP"] == pytest.approx(ref_minp, rel=1e-12, abs=1e-15)
        assert r["num_valid_queries"] == ref_valid


def test_float32_distances_with_ties_equal_reference():
    rng = np.random.default_rng(5)
    d, q_pids, g_pids, q_cams, g_cams = _random_problem(rng, 50, 300, 20, 3, 7)
    d = (d / 7).astype(np.float32)
    ref_cmc, ref_map, _, _ = reference_market(d, q_pids, g_pids, q_cams, g_cams, 50)
    r = evaluate_rank(torch.from_numpy(d), q_pids, g_pids, q_cams, g_cams)
    np.testing.assert_array_equal(r["cmc"], ref_cmc)
    assert r["mAP"] == pytest.approx(ref_map, rel=1e-12)


def test_ranks_in_rows_counts_ties_by_column_and_skips_excluded():
    # Row 0: [2, 1, inf, 1, 0]: item 3 (value 1) comes after items 4 (0) and 1 (1, lower column): rank 3;
    # item 0 (value 2) is last of the 4 finite items: rank 4. Row 1: item 1 is the smallest: rank 1.
    d = np.array([[2.0, 1.0, np.inf, 1.0, 0.0], [5.0, 0.0, 5.0, 5.0, 5.0]])
    ranks = ranks_in_rows(d, np.array([0, 0, 1]), np.array([3, 0, 1]))
    assert ranks.tolist() == [3, 4, 1]


def _features_problem(seed=0, n_q=70, n_g=300, dim=16, n_ids=25):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    q_pids, g_pids = rng.integers(0, n_ids, n_q), rng.integers(0, n_ids, n_g)
    qf = (centres[q_pids] + 0.9 * rng.standard_normal((n_q, dim))).astype(np.float32)
    gf = (centres[g_pids] + 0.9 * rng.standard_normal((n_g, dim))).astype(np.float32)
    return qf, gf, q_pids, g_pids, rng.integers(0, 4, n_q), rng.integers(0, 4, n_g)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] == b[k], k  # bit for bit


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("protocol", ["market", "cuhk03"])
def test_chunked_equals_unchunked_bit_for_bit(metric, protocol):
    args = _features_problem()
    full = evaluate_features(*args, metric=metric, protocol=protocol, seed=3, chunk_size=1000, topk=5)
    for chunk in (1, 7, 64):
        _same(evaluate_features(*args, metric=metric, protocol=protocol, seed=3, chunk_size=chunk, topk=5), full)


def test_evaluate_features_equals_evaluate_rank_of_the_distances():
    qf, gf, *labels = _features_problem(1)
    for metric in ("euclidean", "cosine"):
        d = pairwise_distance(qf, gf, metric).numpy()
        by_rank = evaluate_rank(d, *labels)
        _same(evaluate_features(qf, gf, *labels, metric=metric), by_rank)
        _same(evaluate_features(torch.from_numpy(qf), torch.from_numpy(gf), *labels, metric=metric), by_rank)


def test_pairwise_distance_values():
    x = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    y = np.array([[0.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    # squared euclidean: |(3,4)|^2 = 25, |(3,2)|^2 = 13, 1, |(1,-2)|^2 = 5
    np.testing.assert_allclose(pairwise_distance(x, y).numpy(), [[25, 13], [1, 5]], rtol=1e-6)
    # cosine: 1 - cos; (0, 0) has no direction and gives distance 1.
    np.testing.assert_allclose(pairwise_distance(x, y, "cosine").numpy(), [[1, 1 - 0.8], [1, 1]], atol=1e-6)
    assert pairwise_distance(x.astype(np.float64), y.astype(np.float64)).dtype == torch.float64


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_distance_rows_do_not_depend_on_the_batch(metric):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((600, 300)).astype(np.float32), rng.standard_normal((500, 300)).astype(np.float32)
    full = pairwise_distance(x, y, metric)
    for a, b in [(0, 1), (5, 8), (250, 270), (256, 600), (599, 600)]:
        assert torch.equal(pairwise_distance(x[a:b], y, metric), full[a:b])


def test_topk_lists_nearest_remaining_items_in_stable_order():
    # 1-d features: query (pid 1, cam 0) at 0, gallery at 0, 1, 1, 3, 0 -> squared distances 0, 1, 1, 9, 0.
    qf = np.array([[0.0]], dtype=np.float32)
    gf = np.array([[0.0], [1.0], [1.0], [3.0], [0.0]], dtype=np.float32)
    g_pids, g_cams = np.array([1, 2, 1, 1, 5]), np.array([0, 0, 1, 2, 1])
    # item 0 is junk (pid 1, cam 0); order of the rest: 4 (0), 1 (1), 2 (1, tie: higher index), 3 (9).
    r = evaluate_features(qf, gf, np.array([1]), g_pids, np.array([0]), g_cams, topk=6)
    assert r["topk"].tolist() == [[4, 1, 2, 3, -1, -1]]


def test_cuhk03_with_one_image_per_identity_equals_market():
    # Every remaining gallery identity has one image, so the single-shot draw changes nothing.
    d = np.array([[0.3, 0.1, 0.2, 0.4], [0.4, 0.3, 0.2, 0.1]])
    q_pids, q_cams = np.array([1, 2]), np.array([0, 0])
    g_pids, g_cams = np.array([1, 2, 3, 4]), np.array([1, 1, 1, 1])
    market = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=4)
    cuhk = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=4, protocol="cuhk03", seed=0)
    _same(cuhk, market)


def test_cuhk03_draws_one_image_per_identity():
    # Query pid 1 (cam 0); gallery: its match (cam 1, d 0.5), and identity 2 at d 0.1 and d 0.9.
    # Each draw keeps one of identity 2's images: 0.1 puts the match at rank 2, 0.9 at rank 1, each with
    # probability 1/2. Over 500 identical queries x 10 draws, rank-1 is 0.5 +- 0.007 (1 sd); rank-2 is always 1.
    # AP ignores the draw: ranks of the match among all remaining items = 2 -> AP = 1/2.
    n = 500
    d = np.tile([0.5, 0.1, 0.9], (n, 1))
    q_pids, q_cams = np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    g_pids, g_cams = np.array([1, 2, 2]), np.array([1, 1, 2])
    r = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=3, protocol="cuhk03", seed=1)
    assert abs(r["cmc"][0] - 0.5) < 0.05
    assert r["cmc"][1:].tolist() == [1, 1]
    assert r["mAP"] == pytest.approx(0.5)
    again = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=3, protocol="cuhk03", seed=1, chunk_size=7)
    _same(again, r)
    other = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=3, protocol="cuhk03", seed=2)
    assert other["cmc"][0] != r["cmc"][0]
    unseeded = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=3, protocol="cuhk03")
    assert abs(unseeded["cmc"][0] - 0.5) < 0.05


@pytest.mark.parametrize(
    "change, message",
    [
        ({"qf": np.zeros((3, 5), np.float32)}, r"gf has shape \(6, 4\), expected \(n_g, 5\)"),
        ({"q_pids": np.zeros(2, np.int64)}, r"q_pids has shape \(2,\), expected \(n_q,\) = \(3,\)"),
        ({"g_camids": np.zeros(7, np.int64)}, r"g_camids has shape \(7,\), expected \(n_g,\) = \(6,\)"),
        ({"g_pids": np.zeros(6, np.float64)}, r"g_pids has dtype float64, expected an integer dtype"),
        ({"qf": np.full((3, 4), np.nan, np.float32)}, r"qf contains NaN or inf \(first in row 0\)"),
        ({"gf": np.vstack([np.zeros((5, 4)), [[0, np.inf, 0, 0]]])}, r"gf contains NaN or inf \(first in row 5\)"),
        ({"qf": np.zeros(4, np.float32)}, r"qf has shape \(4,\), expected a 2-D array \(n_q, d\)"),
        ({"gf": np.full((6, 4), 1e30, np.float32)}, r"distances of qf to gf .* NaN or inf"),
    ],
)
def test_bad_feature_inputs(change, message):
    args = {
        "qf": np.zeros((3, 4), np.float32), "gf": np.ones((6, 4), np.float32),
        "q_pids": np.zeros(3, np.int64), "g_pids": np.zeros(6, np.int64),
        "q_camids": np.zeros(3, np.int64), "g_camids": np.ones(6, np.int64),
    }
    args.update(change)
    with pytest.raises(MetricsInputError, match=message):
        evaluate_features(**args)


@pytest.mark.parametrize(
    "distmat, kwargs, message",
    [
        (np.zeros((2, 3)), {}, r"q_pids has shape \(1,\), expected \(n_q,\) = \(2,\)"),
        (np.array([[0.0, np.nan]]), {}, r"distmat contains NaN or inf \(first in row 0\)"),
        (np.zeros(2), {}, r"distmat has shape \(2,\), expected a 2-D array"),
        (np.zeros((1, 0)), {}, r"distmat has shape \(1, 0\), expected a 2-D array \(n_q, n_g\) with n_q, n_g > 0"),
        (np.zeros((1, 2)), {"max_rank": 0}, "max_rank must be a positive integer"),
        (np.zeros((1, 2)), {"protocol": "duke"}, "protocol must be one of market, cuhk03"),
    ],
)
def test_bad_distmat_inputs(distmat, kwargs, message):
    with pytest.raises(MetricsInputError, match=message) as info:
        evaluate_rank(distmat, np.array([1]), np.array([1, 2]), np.array([0]), np.array([1, 1]), **kwargs)
    assert isinstance(info.value, DcsnasError)
