import numpy as np
import torch

from core.config import AugmentConfig, SplitConfig
from core.data.dataset import TileDataset
from core.data.discovery import find_dataset
from core.data.splits import split_pairs
from core.data.transforms import augment, downscale_probability, pad_to, upscale
from tests.rasters import make_folder_dataset


def test_pad_reflect_marks_padding_invalid():
    img = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    mask = np.ones((2, 3), np.uint8)
    valid = np.ones((2, 3), bool)
    i, m, v = pad_to(img, mask, valid, 4, 4)
    assert i.shape == (1, 4, 4)
    assert i[0, :, 3].tolist() == [1, 4, 1, 4]  # reflect, not zeros
    assert v.sum() == 6 and not v[2:].any() and not v[:, 3].any()
    assert m[2:].sum() == 0


def test_upscale_modes_and_back():
    mask = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    up = upscale(mask, 4, "nearest")
    assert up.shape == (1, 8, 8) and up[0, :4, 4:].eq(1).all() and up[0, :4, :4].eq(0).all()
    prob = torch.rand(1, 1, 6, 5)
    back = downscale_probability(upscale(prob, 2, "nearest"), 2)
    torch.testing.assert_close(back, prob)
    img = torch.rand(3, 5, 7)
    assert upscale(img, 8).shape == (3, 40, 56)


def test_augment_is_synchronized():
    img = np.arange(16.0).reshape(1, 4, 4)
    mask, valid = img[0].copy(), img[0] > 7
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(20):
        a, b, c = augment(img, mask, valid, AugmentConfig(), rng)
        assert np.array_equal(a[0], b) and np.array_equal(c, a[0] > 7)
        assert a.flags.c_contiguous and sorted(a.ravel()) == list(range(16))
        seen.add(a.tobytes())
    assert len(seen) == 8  # all 8 flips/rotations of a square occur
    a, _, _ = augment(img, mask, valid, AugmentConfig(False, False, False), rng)
    assert np.array_equal(a, img)


def test_dataset_items_fixed_size_with_valid_region(tmp_path):
    index = find_dataset(make_folder_dataset(tmp_path, n=3, size=23))
    ds = TileDataset(index.pairs, [1, 2], [0.0, 0.0], [1.0, 1.0], upscale=2, pad_multiple=32)
    image, mask, valid = ds[2]
    assert image.shape == (2, 64, 64) and mask.shape == valid.shape == (1, 64, 64)
    assert valid.sum() == 46 * 46 and valid[0, :46, :46].all()
    assert mask.sum() == 4 * 4  # 2x2 positives upscaled by 2 (nearest)
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    x, y, v = next(iter(loader))
    assert x.shape == (3, 2, 64, 64) and v.dtype == torch.bool


def test_real_dataset_normalised_with_train_stats(solafune):
    from core.data.stats import summarize

    pairs = split_pairs(find_dataset(solafune), SplitConfig())[:60]
    train = [p for p in pairs if p.split == "train"]
    stats = summarize(train, [4, 3, 2, 8]).stats
    ds = TileDataset(train, [4, 3, 2, 8], stats.mean, stats.std, upscale=1)
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    vs = torch.stack([ds[i][2] for i in range(len(ds))]).expand_as(xs)
    vals = xs[vs].reshape(-1)
    # standardised over exactly these training pixels: mean 0, std 1
    per_band = xs.permute(1, 0, 2, 3)[vs.permute(1, 0, 2, 3)].reshape(4, -1)
    np.testing.assert_allclose(per_band.mean(1).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(per_band.std(1, unbiased=False).numpy(), 1, atol=1e-4)
    assert vals.numel() == 4 * sum(stats.count) // 4


def test_train_crop_stays_inside_each_real_tile(solafune):
    """4x upscaling pads every tile to 128 because of a few 25-26 px tiles; training on
    random 96 px crops keeps each crop inside its own tile's upscaled extent."""
    from core.data.rasters import raster_info

    pairs = find_dataset(solafune).pairs[:200]
    shapes = [(raster_info(p.image).height, raster_info(p.image).width) for p in pairs]
    big, small = shapes.index((25, 25)), shapes.index((23, 23))  # both in the first 200
    chosen = [pairs[big], pairs[small]]
    whole = TileDataset(chosen, [4, 3, 2, 8], [0.0] * 4, [1.0] * 4, upscale=4)
    ds = TileDataset(chosen, [4, 3, 2, 8], [0.0] * 4, [1.0] * 4, upscale=4, crop=96, seed=1)
    assert whole.size == 128 and ds.crop == 96
    ref_image, ref_mask, _ = whole.prepared(0)
    seen = set()
    for _ in range(30):
        image, mask, valid = ds[0]  # 25 px -> 100 px: every crop is all tile, no padding
        assert image.shape == (4, 96, 96) and bool(valid.all())
        hits = [(y, x) for y in range(5) for x in range(5)
                if np.array_equal(image[0].numpy(), ref_image[0, y:y + 96, x:x + 96])]  # fmt: skip
        assert len(hits) == 1
        y, x = hits[0]
        assert np.array_equal(mask[0].numpy(), ref_mask[y : y + 96, x : x + 96])
        seen.add(hits[0])
    assert len(seen) > 5  # the offsets vary
    _, _, valid = ds[1]  # 23 px -> 92 px: the crop keeps the origin, 4 px of padding
    assert int(valid.sum()) == 92 * 92 and bool(valid[0, :92, :92].all())
    # val/test datasets and crops at least as large as the tile are whole tiles
    assert TileDataset(chosen, [4], [0.0], [1.0], upscale=4, crop=128).crop is None
