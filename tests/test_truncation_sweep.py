"""FID and IS of BigGAN's truncation trick (config.fid_truncations, `--truncations`): a tiny
run with a toy feature network.

The `fid` and `is` evaluators run on the tiny BigBiGAN's initial state (no training: the
metrics only need some generator) over the mock MNIST, with a fixed random projection in
place of pytorch-fid's Inception. Its 16 pool features keep FID's matrix square root cheap
(at Inception's 2048, one takes a minute on 2 CPU cores).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from bigbigan import evaluate, sharding
from bigbigan.evaluation import fid as fid_lib
from bigbigan.evaluation import image_generation, inception, inception_weights
from bigbigan.evaluation.context import EvaluationContext
from bigbigan.evaluation.registry import Evaluation
from bigbigan.families import bigbigan as bigbigan_family
from bigbigan.families.common import sample_prior
from mnist_mock import tiny_bigbigan_config

POOL_FEATURES, CLASSES = 16, 1008
# Fewer samples than the mock's 20 training images (FID's reference), and not a multiple of
# the evaluation batch (8): the last batch is padded.
SAMPLES = 20
THRESHOLDS = (1.0, 0.25)


def _toy_network_weights():
  rng = np.random.default_rng(0)
  projection = rng.standard_normal((32 * 32 * 3, POOL_FEATURES)) / np.sqrt(32 * 32 * 3)
  classifier = rng.standard_normal((POOL_FEATURES, CLASSES))
  return jnp.asarray(projection, jnp.float32), jnp.asarray(classifier, jnp.float32)


@jax.jit
def toy_network(x: jax.Array) -> dict[str, jax.Array]:
  """Inception's outputs as the evaluators read them, of [B, 32, 32, 3] images."""
  projection, classifier = _toy_network_weights()
  pool = jnp.tanh(4.0 * x.reshape(len(x), -1) @ projection)
  return {"pool": pool, "logits_unbiased": 3.0 * pool @ classifier}


@pytest.fixture
def toy_inception(monkeypatch):
  """The toy network in place of Inception; returns the list of what each pass was of."""
  passes = []
  outputs = image_generation.InceptionOutputs.outputs

  def recorded(self, images, what, logits=False, total=None):
    passes.append(what)
    return outputs(self, images, what, logits, total)

  monkeypatch.setattr(image_generation.InceptionOutputs, "_inception_fn",
                      lambda self: toy_network)
  # A network with a classifier, as the Inception Score needs.
  monkeypatch.setattr(image_generation.InceptionOutputs, "weights", lambda self: (
      inception_weights.InceptionWeights({}, inception.FIDInceptionV3(), "a toy network")))
  monkeypatch.setattr(image_generation.InceptionOutputs, "outputs", recorded)
  return passes


def _evaluate(variant: str, data_dir: str, workdir, **overrides):
  """The `fid` and `is` evaluators of the tiny BigBiGAN `variant`'s initial state, with
  config.fid_truncations=THRESHOLDS: (results, config, predict, state)."""
  weights = workdir / "toy_weights.pth"  # Hashed into the reference statistics' cache key.
  weights.write_bytes(b"a toy network")
  config = tiny_bigbigan_config(
      variant, data_dir=data_dir, eval_metrics=("fid", "is"), fid_samples=SAMPLES,
      fid_reference_split="train", inception_weights=str(weights),
      fid_truncations=THRESHOLDS, **overrides)
  mesh = sharding.make_mesh()
  networks = bigbigan_family.build_networks(config)
  state = jax.jit(bigbigan_family.state_initializer(config, networks),
                  out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(config.seed))
  predict = bigbigan_family.make_predict_fns(config, networks, mesh)
  # The initial state is the evaluated one: fid_random_init must equal fid.
  context = EvaluationContext(config, mesh, str(workdir), bigbigan_family.make_data(config, mesh),
                              initial_state=lambda: state)
  results = Evaluation(context).run(predict, state, 1)
  return results, config, predict, state


def _toy_outputs_of_samples(config, predict, state, truncation):
  """The toy network's outputs of the samples, computed apart from the evaluator: z drawn
  with sample_prior from the keys of the evaluator's batches (PRNGKey(seed + 2) folded with
  each batch's first index)."""
  key = jax.random.PRNGKey(config.seed + 2)
  mesh = sharding.make_mesh()
  pools, logits = [], []
  for start in range(0, SAMPLES, config.eval_batch_size):
    z = sample_prior(jax.random.fold_in(key, start), (config.eval_batch_size, config.latent_dim),
                     config.latent_prior, truncation=truncation)
    outputs = toy_network(predict.generate(state, sharding.from_host_array(np.asarray(z),
                                                                             mesh)))
    pools.append(np.asarray(outputs["pool"]))
    logits.append(np.asarray(outputs["logits_unbiased"]))
  return np.concatenate(pools)[:SAMPLES], np.concatenate(logits)[:SAMPLES]


def _reference_statistics(workdir):
  """The real images' mean and covariance that the `fid` evaluator cached."""
  [path] = workdir.glob("fid_reference_*.npz")
  with np.load(path) as cached:
    return cached["mean"], cached["covariance"]


def test_metric_names_write_the_threshold_with_g():
  assert image_generation.metric_name("fid") == "fid"
  assert image_generation.metric_name("fid", 1.0) == "fid_truncation_1"
  assert image_generation.metric_name("inception_score", 0.5) == "inception_score_truncation_0.5"
  assert (image_generation.metric_name("inception_score_std", 0.25)
          == "inception_score_std_truncation_0.25")
  assert image_generation.metric_name("fid", 2) == "fid_truncation_2"


@pytest.mark.slow  # The tiny BigBiGAN's compilations: ~1 min cold, 8 s warm.
def test_uniform_prior_threshold_1_is_the_untruncated_samples(mock_mnist, tmp_path,
                                                              toy_inception):
  # U(-t, t) at t >= 1 draws the untruncated U(-1, 1) of the same keys: the same samples and
  # bit for bit the same metrics; a threshold below 1 draws other samples.
  results, _, _, _ = _evaluate("uniform", mock_mnist, tmp_path)
  assert set(results) == {
      "fid", "fid_random_init", "inception_score", "inception_score_std",
      "fid_truncation_1", "inception_score_truncation_1", "inception_score_std_truncation_1",
      "fid_truncation_0.25", "inception_score_truncation_0.25",
      "inception_score_std_truncation_0.25"}
  for name in ("fid", "inception_score", "inception_score_std"):
    assert results[f"{name}_truncation_1"] == results[name], name
    assert np.isfinite(results[name]), name
  assert results["fid_random_init"] == results["fid"]
  for name in ("fid", "inception_score"):
    assert results[f"{name}_truncation_0.25"] != results[name], name
  # One pass of the toy network per threshold, shared by IS (first) and FID, one of the
  # real images, and one of the initial state's samples.
  assert toy_inception == ["FID samples", "FID samples (truncation 1)",
                           "FID samples (truncation 0.25)", "FID reference images (train)",
                           "FID samples (initial state)"]


@pytest.mark.slow  # As above.
def test_normal_prior_truncated_metrics_equal_an_independent_computation(
    mock_mnist, tmp_path, toy_inception):
  # Without the random-init reference: no pass of the initial state's samples.
  results, config, predict, state = _evaluate("", mock_mnist, tmp_path, fid_random_init=False)
  assert config.latent_prior == "normal" and "fid_random_init" not in results
  reference_mean, reference_covariance = _reference_statistics(tmp_path)
  for truncation in (None,) + THRESHOLDS:
    suffix = "" if truncation is None else f"_truncation_{truncation:g}"
    pool, logits = _toy_outputs_of_samples(config, predict, state, truncation)
    pool = pool.astype(np.float64)
    expected_fid = fid_lib.frechet_distance(pool.mean(axis=0), np.cov(pool, rowvar=False),
                                            reference_mean, reference_covariance)
    expected_score, expected_std = fid_lib.inception_score(logits)
    np.testing.assert_allclose(results["fid" + suffix], expected_fid, rtol=1e-6)
    np.testing.assert_allclose(results["inception_score" + suffix], expected_score, rtol=1e-6)
    np.testing.assert_allclose(results["inception_score_std" + suffix], expected_std,
                               rtol=1e-5, atol=1e-9)
  # The truncated normal at 1 and at 0.25 are other samples than N(0, I)'s, and each other's.
  for name in ("fid", "inception_score"):
    values = [results[name], results[f"{name}_truncation_1"], results[f"{name}_truncation_0.25"]]
    assert len(set(values)) == 3, (name, values)
  assert len(toy_inception) == 4 and toy_inception.count("FID reference images (train)") == 1


def test_sweep_table_has_a_row_per_threshold():
  results = {"fid": 30.0, "inception_score": 2.5, "inception_score_std": 0.125,
             "fid_truncation_0.25": 41.5, "inception_score_truncation_0.25": 1.75,
             "inception_score_std_truncation_0.25": 0.0625, "fid_truncation_1": 28.0,
             "inception_score_truncation_1": 2.625, "inception_score_std_truncation_1": 0.25,
             "knn_1_accuracy_cosine": 0.5}
  assert evaluate.format_truncation_sweep(results).splitlines() == [
      "truncation      IS  IS std      FID",
      "----------  ------  ------  -------",
      "      none  2.5000  0.1250  30.0000",
      "         1  2.6250  0.2500  28.0000",
      "      0.25  1.7500  0.0625  41.5000"]
  # Only the metrics computed: FID alone.
  assert evaluate.format_truncation_sweep(
      {"fid": 3.0, "fid_truncation_0.5": 4.0, "linear_accuracy": 0.25}).splitlines() == [
          "truncation     FID", "----------  ------", "      none  3.0000", "       0.5  4.0000"]
  # No truncated metric, no table.
  assert evaluate.format_truncation_sweep({"fid": 3.0, "inception_score": 2.0}) is None


def _run_main(argv):
  with flagsaver.flagsaver():
    flags.FLAGS(["evaluate"] + argv)
    evaluate.main(["evaluate"])


@pytest.fixture
def run_dir(tmp_path):
  (tmp_path / "config.json").write_text(tiny_bigbigan_config().to_json_best_effort())
  return tmp_path


def test_truncations_flag_sets_the_config_and_prints_the_sweep(run_dir, monkeypatch, capsys):
  evaluated = []

  def fake_evaluate_checkpoint(config, workdir, step, metrics):
    evaluated.append((tuple(config.fid_truncations), metrics))
    return 3, {"fid": 2.0, "fid_truncation_0.5": 1.5}, {}

  monkeypatch.setattr(evaluate, "evaluate_checkpoint", fake_evaluate_checkpoint)
  monkeypatch.setattr(evaluate, "write_results", lambda *args: None)
  _run_main([f"--workdir={run_dir}", "--metrics=fid", "--truncations=1.0,0.5,0.25"])
  assert evaluated == [((1.0, 0.5, 0.25), ["fid"])]
  assert "Truncation sweep (step 3)\ntruncation     FID\n" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["1.0,x", "0.5,0", "-1", "nan"])
def test_a_bad_threshold_is_one_clear_line(run_dir, capsys, value):
  with pytest.raises(SystemExit) as exit_info:
    _run_main([f"--workdir={run_dir}", "--metrics=fid", f"--truncations={value}"])
  assert exit_info.value.code == 1
  bad = value.split(",")[-1]
  assert capsys.readouterr().err.splitlines() == [
      f"bigbigan: error: --truncations: {bad!r} is not a threshold; pass finite numbers > 0, "
      "e.g. --truncations=1.0,0.5,0.25"]
