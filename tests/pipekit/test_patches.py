import numpy as np
import pytest

from pipekit_cycle.ssh.patches import extract, patch_origins, stitch, tent


def test_origins_cover_the_field_with_the_last_patch_flush():
    origins = patch_origins((10, 7), (4, 3), (3, 2))
    rows, cols = np.unique(origins[:, 0]), np.unique(origins[:, 1])
    np.testing.assert_array_equal(rows, [0, 3, 6])  # 6 = 10 - 4: flush with the border
    np.testing.assert_array_equal(cols, [0, 2, 4])  # 4 = 7 - 3, already on the stride
    assert origins.shape == (9, 2) and tuple(origins[1]) == (0, 2)  # row-major
    np.testing.assert_array_equal(patch_origins((8, 8), 8, 1), [[0, 0]])
    np.testing.assert_array_equal(patch_origins((9, 5), (4, 5), 4)[:, 0], [0, 4, 5])


def test_extract_shapes_and_contents():
    field = np.arange(3 * 10 * 12, dtype=float).reshape(3, 10, 12)
    patches, origins = extract(field, 4, (3, 5))
    assert patches.shape == (origins.shape[0], 3, 4, 4)
    for patch, (r, c) in zip(patches, origins, strict=True):
        np.testing.assert_array_equal(patch, field[:, r : r + 4, c : c + 4])
    # Extra leading axes are kept; a 2-D field works too.
    stacked, _ = extract(np.zeros((2, 3, 10, 12)), (5, 6), 5)
    assert stacked.shape[1:] == (2, 3, 5, 6)
    flat, _ = extract(np.zeros((10, 12)), 5, 5)
    assert flat.shape == (6, 5, 5)


@pytest.mark.parametrize("weight", ["triangular", "uniform"])
@pytest.mark.parametrize(("size", "stride"), [(8, 3), ((6, 9), (2, 5)), (16, 16), ((5, 4), 4)])
def test_stitch_recovers_the_field_exactly(weight: str, size, stride):
    field = np.random.default_rng(0).standard_normal((4, 16, 21))
    patches, origins = extract(field, size, stride)
    np.testing.assert_allclose(stitch(patches, origins, field.shape, weight=weight), field, rtol=0, atol=1e-13)


def test_stitch_is_the_weighted_mean_where_patches_disagree():
    # Two 1 x 4 patches of a 1 x 6 field overlapping on columns 2..3, valued 0 and 1.
    patches = np.stack([np.zeros((1, 4)), np.ones((1, 4))])
    origins = np.array([[0, 0], [0, 2]])
    uniform = stitch(patches, origins, (1, 6), weight="uniform")
    np.testing.assert_allclose(uniform, [[0, 0, 0.5, 0.5, 1, 1]])
    # Tent weights of a 4-wide patch: 1, 2, 2, 1 (a 1-tall patch has weight 1 across rows).
    np.testing.assert_array_equal(tent((1, 4)), [[1, 2, 2, 1]])
    triangular = stitch(patches, origins, (1, 6))
    np.testing.assert_allclose(triangular, [[0, 0, 1 / 3, 2 / 3, 1, 1]])
    # Uncovered points are NaN.
    gap = stitch(np.ones((1, 2, 2)), np.array([[0, 0]]), (3, 3), weight="uniform")
    assert np.isnan(gap[2]).all() and np.isnan(gap[:, 2]).all() and (gap[:2, :2] == 1).all()


def test_tent_is_positive_and_peaks_in_the_middle():
    w = tent(5)
    np.testing.assert_array_equal(w[2], [3, 6, 9, 6, 3])
    assert w.min() == 1 and w.max() == 9


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f: extract(f, 20, 2), "size must fit"),
        (lambda f: extract(f, 4, 0), "stride must be >= 1"),
        (lambda f: extract(f, (4, 4, 4), 2), "size must be an int or a pair"),
        (lambda f: extract(f, 2.5, 2), "size must be an int or a pair"),
        (lambda f: extract(f[0, 0], 2, 1), "at least 2 dimensions"),
    ],
)
def test_extract_errors(call, match: str):
    with pytest.raises(ValueError, match=match):
        call(np.zeros((3, 10, 12)))


def test_stitch_errors():
    patches, origins = extract(np.zeros((3, 10, 12)), 4, 4)
    with pytest.raises(ValueError, match="weight must be 'triangular' or 'uniform'"):
        stitch(patches, origins, (3, 10, 12), weight="gaussian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patches must be"):
        stitch(patches, origins, (2, 10, 12))
    with pytest.raises(ValueError, match="origins must be ints shaped"):
        stitch(patches, origins[:-1], (3, 10, 12))
    with pytest.raises(ValueError, match="must lie inside"):
        stitch(patches, origins + 1, (3, 10, 12))
