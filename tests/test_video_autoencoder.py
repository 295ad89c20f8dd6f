"""The demo's learned video autoencoder: Wan's geometry and causality, its file format, and that
training it reduces the reconstruction error."""
import numpy as np
import pytest
from flax import nnx

from wildactor_jax.demo import autoencoder as training
from wildactor_jax.infer import encoders
from wildactor_jax.models import module_npz, video_autoencoder as ae_lib

SMALL = ae_lib.AutoencoderConfig(z_dim=4, stem=8, width=8, latent_width=8)


def video(rng, frames=9, size=16):
  return rng.uniform(-1.0, 1.0, (2, frames, size, size, 3)).astype(np.float32)


def test_geometry_is_wans_1_plus_4k_frames_8x_space():
  ae = ae_lib.init(SMALL)
  z = ae.encode(video(np.random.default_rng(0)))
  assert z.shape == (2, 3, 2, 2, 4) and ae.latent_shape(9, 16, 16) == (3, 2, 2, 4)
  assert ae.decode(z).shape == (2, 9, 16, 16, 3)
  assert ae.decode(z[:, :1]).shape == (2, 1, 16, 16, 3)   # one latent frame: one image
  for frames, size in ((8, 16), (9, 12)):
    with pytest.raises(ValueError, match="1 \\+ 4k"):
      ae.encode(video(np.random.default_rng(0), frames, size))


def test_causal_in_time_both_ways():
  """A latent never reads a later frame; a frame never reads a later latent."""
  rng = np.random.default_rng(1)
  ae = ae_lib.init(SMALL)
  x = video(rng)
  changed = x.copy()
  changed[:, 5:] = rng.uniform(-1, 1, changed[:, 5:].shape)   # frames of latent 2 only
  z, z2 = np.asarray(ae.encode(x)), np.asarray(ae.encode(changed))
  np.testing.assert_array_equal(z[:, :2], z2[:, :2])
  assert not np.allclose(z[:, 2], z2[:, 2])
  zc = z.copy()
  zc[:, 2] += 1.0
  y, y2 = np.asarray(ae.decode(z)), np.asarray(ae.decode(zc))
  np.testing.assert_array_equal(y[:, :5], y2[:, :5])          # frames of latents 0 and 1
  assert not np.allclose(y[:, 5:], y2[:, 5:])
  # A still image encodes like the first frame of a clip (how references are encoded).
  np.testing.assert_allclose(np.asarray(ae.encode(x[:, :1]))[:, 0], z[:, 0], rtol=1e-5, atol=1e-6)


def test_file_round_trip_dtype_and_statistics(tmp_path):
  rng = np.random.default_rng(2)
  ae = ae_lib.with_stats(ae_lib.init(SMALL), [0.5] * 4, [2.0] * 4)
  x = video(rng)
  raw = np.asarray(ae.moments(x)[0])
  np.testing.assert_allclose(np.asarray(ae.encode(x)), (raw - 0.5) / 2.0, rtol=1e-5, atol=1e-6)
  for dtype in ("float32", "float16"):
    back = ae_lib.load(ae_lib.save(ae, str(tmp_path / f"{dtype}.npz"), dtype))
    assert back.config == ae.config
    tol = 0 if dtype == "float32" else 1e-2
    np.testing.assert_allclose(np.asarray(back.encode(x)), np.asarray(ae.encode(x)), atol=tol)
  (tmp_path / "bad.npz").write_bytes(b"not a file")
  with pytest.raises(ValueError, match="bad.npz"):
    ae_lib.load(str(tmp_path / "bad.npz"))


def test_a_damaged_npz_is_a_one_line_error(tmp_path):
  """A file cut short (a copy killed mid-way) or with a flipped byte inside a weight fails in
  one line naming the file, never with zipfile's traceback."""
  good = (tmp_path / "ae.npz")
  ae_lib.save(ae_lib.init(SMALL), str(good))
  data = good.read_bytes()
  (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
  flipped = bytearray(data)
  flipped[len(data) // 2] ^= 0xFF  # inside a stored (uncompressed) weight: its CRC fails
  (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
  for name in ("cut.npz", "flipped.npz"):
    with pytest.raises(ValueError, match=name) as e:
      ae_lib.load(str(tmp_path / name))
    assert "\n" not in str(e.value)


def test_build_and_load_fills_an_abstract_module_and_refuses_other_state(tmp_path):
  """The loaders build their module for shapes only (no initialiser runs) and fill it: every
  weight comes back concrete and equal; a module holding more than parameters (batch
  statistics would stay abstract) is refused in one line."""
  ae = ae_lib.init(SMALL, seed=3)
  path = ae_lib.save(ae, str(tmp_path / "ae.npz"))
  back = module_npz.build_and_load(lambda: ae_lib.init(SMALL), path, "video autoencoder")
  saved, loaded = (dict(nnx.to_flat_state(nnx.state(m))) for m in (ae, back))
  assert saved.keys() == loaded.keys()
  for k, v in loaded.items():
    np.testing.assert_array_equal(np.asarray(v.get_value()), np.asarray(saved[k].get_value()))
  norm = nnx.BatchNorm(4, rngs=nnx.Rngs(0))
  module_npz.save(norm, str(tmp_path / "norm.npz"), {})
  with pytest.raises(ValueError, match="norm.npz: .* state besides parameters .*mean"):
    module_npz.build_and_load(lambda: nnx.BatchNorm(4, rngs=nnx.Rngs(0)),
                              str(tmp_path / "norm.npz"))


def test_config_kind_learned_loads_and_checks_channels(tmp_path):
  import ml_collections
  path = ae_lib.save(ae_lib.init(SMALL), str(tmp_path / "ae.npz"))
  cfg = ml_collections.ConfigDict({"vae": {"kind": "learned", "path": path, "z_dim": 4}})
  assert encoders.vae_from_config(cfg).z_dim == 4
  cfg.vae.z_dim = 16
  with pytest.raises(ValueError, match="4 latent channels"):
    encoders.vae_from_config(cfg)


def test_training_reduces_reconstruction_error_and_finalise_rounds_first():
  rng = np.random.default_rng(3)
  # Smooth clips (a moving coloured square on a coloured background), uint8 as the raw data.
  clips = np.empty((6, 9, 16, 16, 3), np.uint8)
  for i in range(6):
    clips[i] = rng.integers(0, 255, 3)
    for t in range(9):
      clips[i, t, 4:10, t % 8:t % 8 + 6] = rng.integers(0, 255, 3)
  images = clips[:, 0]
  before = training.reconstruction_error(ae_lib.init(SMALL), clips)
  model = training.train(clips, images, SMALL, steps=80, batch=4, learning_rate=5e-3)
  after = training.reconstruction_error(model, clips)
  assert after < 0.8 * before, (before, after)
  final = training.finalise(model, clips, "float16")
  leaves = [np.asarray(v[...]) for _, v in nnx.to_flat_state(nnx.state(final, nnx.Param))]
  assert all(np.array_equal(l, l.astype(np.float16).astype(np.float32)) for l in leaves)
  z = np.asarray(final.encode(clips.astype(np.float32) / 127.5 - 1.0)).reshape(-1, 4)
  np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-3)   # the statistics it normalises by
  np.testing.assert_allclose(z.std(0), 1.0, atol=1e-2)


def test_detail_weights_mark_thin_structures_not_flat_areas():
  x = np.full((1, 1, 32, 32, 3), -0.5, np.float32)
  x[0, 0, 8:24, 15:17] = 0.8                     # a 2-pixel-wide limb on a flat background
  w = training.detail_weights(x, 5.0)
  assert w.shape == (1, 1, 32, 32, 1)
  assert np.all(w[0, 0, 8:24, 15:17] == 6.0) and w[0, 0, :4].max() == 1.0


def test_decoder_finetune_keeps_the_encoder_and_lowers_the_weighted_loss():
  """Only dec_* parameters move: latents (and whatever was trained on them) stay bit-identical;
  the detail-weighted reconstruction loss falls."""
  rng = np.random.default_rng(4)
  clips = np.empty((6, 9, 16, 16, 3), np.uint8)
  for i in range(6):
    clips[i] = rng.integers(0, 255, 3)
    for t in range(9):
      clips[i, t, 3:13, t % 8 + 4:t % 8 + 6] = rng.integers(0, 255, 3)   # a thin moving bar
  images = clips[:, 0]
  base = training.finalise(training.train(clips, images, SMALL, steps=20, batch=4,
                                          learning_rate=5e-3), clips, "float16")
  x = clips.astype(np.float32) / 127.5 - 1.0
  z0 = np.asarray(base.encode(x))
  w = training.detail_weights(x, 5.0)
  loss = lambda m: float(training.weighted_reconstruction_loss(x, m.decode(m.encode(x)), w))
  before = loss(base)
  enc_before = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(base, nnx.Param))
                if not str(k[0]).startswith("dec_")}
  tuned = training.finetune_decoder(base, clips, images, steps=60, batch=4, learning_rate=3e-3)
  np.testing.assert_array_equal(np.asarray(tuned.encode(x)), z0)
  enc_after = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(tuned, nnx.Param))
               if not str(k[0]).startswith("dec_")}
  assert enc_before.keys() == enc_after.keys() and all(
      np.array_equal(enc_before[k], enc_after[k]) for k in enc_before)
  assert tuned.config == base.config           # the same latent statistics
  assert loss(tuned) < 0.9 * before, (before, loss(tuned))
