"""Property-based tests (hypothesis) of the public pieces that had none: the input sources, the records'
statistics and JSON round trip, the run-health summary, Config's round trip and validation, the IDX parser and
the losses. Every property compares the library with an independent computation (numpy, the ``statistics``
module, a hand-built IDX file, the documented formula written out) or with a stated invariant.

JAX compiles every new shape again, so shapes are drawn from small fixed sets and the batch size is fixed;
``max_examples`` is kept low: the whole file runs in well under a minute on one CPU core.
"""

import gzip
import json
import math
import re
import statistics
import struct
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import subliminal_mlp as sm
from subliminal_mlp import inputs
from subliminal_mlp.core import results
from subliminal_mlp.core.config import DATASETS, INIT_NOISE_KINDS, LOSSES, MODELS, STUDENT_INPUTS, Config, ConfigError
from subliminal_mlp.core.data import DataError, parse_idx
from subliminal_mlp.core.losses import class_cross_entropy, mse_distillation
from subliminal_mlp.core.students import output_mask

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
B = 5  # the batch size of every draw below (one shape to compile)
seeds = st.integers(0, 2**32 - 1)


def draw(src, idx, key, hp=None):
    hp = {} if hp is None else hp
    return np.asarray(src.draw(src.prepare(key, src.arrays, hp), jnp.asarray(idx, jnp.int32), hp))


def index_batch(n):
    """``B`` indices into a set of ``n`` examples (repeats allowed: a repeated index is the same example)."""
    return st.lists(st.integers(0, n - 1), min_size=B, max_size=B)


# ----------------------------------------------------------------------------- input sources

#: The amplitude spectrum of phase_randomised below: any non-negative one with power off f = 0.
_AMPLITUDE = np.abs(np.random.default_rng(0).normal(size=(28, 28)))
#: Sources whose examples are random bits only: example j must be the same *bit for bit* in any batch.
EXACT = ("uniform", "gaussian", "bernoulli", "cycled", "mix")
#: Sources with a matmul or an FFT over the batch: the same up to float32 rounding.
ROUNDED = ("subspace", "blurred", "phase_randomised")


def built_in(kind, n):
    return {
        "uniform": lambda: inputs.uniform(n, scale=0.7),
        "gaussian": lambda: inputs.gaussian(n),
        "bernoulli": lambda: inputs.bernoulli(n),
        "cycled": lambda: inputs.cycled(inputs.gaussian(n), min(3, n)),
        "mix": lambda: inputs.mix([(inputs.uniform(n), 0.3), (inputs.bernoulli(n // 2 + 1), 0.7)]),
        "subspace": lambda: inputs.subspace(5, inputs.uniform(n)),
        "blurred": lambda: inputs.blurred(1.0, inputs.uniform(n)),
        "phase_randomised": lambda: inputs.phase_randomised(n, _AMPLITUDE),
    }[kind]()


@FAST
@given(kind=st.sampled_from(EXACT + ROUNDED), n=st.integers(1, 10**6), seed=seeds, data=st.data())
def test_an_example_depends_only_on_the_key_and_its_index_not_on_its_batch(kind, n, seed, data):
    """inputs.py: "Example j of a run's set is a pure function of the run's input key and j", so a batch can be
    drawn in any order, in any company, in every epoch. For every built-in source, random indices (repeats
    included) in a random order: each row equals the example drawn alone, and permuting the indices permutes
    the rows. Also the documented batch shape ``(B, 784)`` in float32."""
    src, key = built_in(kind, n), jax.random.PRNGKey(seed)
    idx = data.draw(index_batch(n), label="idx")
    perm = data.draw(st.permutations(range(B)), label="perm")
    batch = draw(src, idx, key)
    assert batch.shape == (B, 784) and batch.dtype == np.float32
    alone = np.concatenate([draw(src, [j], key) for j in idx])
    permuted = draw(src, np.asarray(idx)[perm], key)
    if kind in EXACT:
        np.testing.assert_array_equal(alone, batch)
        np.testing.assert_array_equal(permuted, batch[perm])
    else:
        np.testing.assert_allclose(alone, batch, rtol=0, atol=2e-5)
        np.testing.assert_allclose(permuted, batch[perm], rtol=0, atol=2e-5)


@FAST
@given(scale=st.floats(1e-3, 1e3) | st.just(1.0), by_name=st.booleans(), n=st.integers(1, 10**6), seed=seeds,
       data=st.data())
def test_uniform_is_the_documented_noise_in_its_range_and_bernoulli_gaussian_scale(scale, by_name, n, seed, data):
    """``uniform(scale=s)``: example j is ``U[-s, s]^784`` drawn from ``fold_in(key, j)`` (the paper's noise,
    training.noise_images' formula), written out here with jax.random directly, for a number or a
    hyperparameter name; every value is in ``[-s, s]``. ``bernoulli(scale=s)`` takes only the values ±s;
    ``gaussian(std=s)`` is ``s`` times ``gaussian(std=1)``."""
    key, idx = jax.random.PRNGKey(seed), data.draw(index_batch(n), label="idx")
    setting, hp = ("s", {"s": scale}) if by_name else (scale, {})
    x = draw(inputs.uniform(n, scale=setting), idx, key, hp)
    want = np.stack([np.asarray(jax.random.uniform(jax.random.fold_in(key, j), (784,), jnp.float32,
                                                   minval=-scale, maxval=scale)) for j in idx])
    assert x.dtype == np.float32 and x.shape == (B, 784)
    np.testing.assert_array_equal(x, want)
    assert np.all(np.abs(x) <= np.float32(scale))
    signs = draw(inputs.bernoulli(n, scale=setting), idx, key, hp)
    assert set(np.unique(signs).tolist()) <= {float(np.float32(-scale)), float(np.float32(scale))}
    g1, gs = draw(inputs.gaussian(n, std=1.0), idx, key), draw(inputs.gaussian(n, std=setting), idx, key, hp)
    np.testing.assert_allclose(gs, np.float32(scale) * g1, rtol=1e-6, atol=0)


component_kinds = st.sampled_from(["uniform", "gaussian", "bernoulli", "images"])
weights = st.floats(-2, 2)


@FAST
@given(parts=st.lists(st.tuples(component_kinds, st.integers(1, 40), weights, st.sampled_from(["number", "name", "fn"])),
                      min_size=1, max_size=3),
       extra_n=st.none() | st.integers(1, 100), seed=seeds, data=st.data())
def test_mix_is_the_weighted_sum_of_its_components_each_indexed_mod_its_size(parts, extra_n, seed, data):
    """``mix``: example j is ``Σ_i w_i · source_i(j mod n_i)``, component 0 drawn from the run's key and component
    i > 0 from ``fold_in(fold_in(key, MIX_STREAM), i)``; ``n`` defaults to the largest component's size. Checked in float64 against
    each component drawn on its own, with weights given as numbers, hyperparameter names or functions, and an
    image pool (arrays) among the components."""
    key = jax.random.PRNGKey(seed)
    rng = np.random.default_rng(seed)
    comps, hp, want_w = [], {}, []
    for i, (kind, n_i, w, how) in enumerate(parts):
        src = (inputs.images(rng.normal(size=(n_i, 784)).astype(np.float32)) if kind == "images"
               else getattr(inputs, kind)(n_i))
        setting = {"number": w, "name": f"w{i}", "fn": (lambda hp, i=i: 2 * hp[f"h{i}"])}[how]
        hp[f"w{i}"], hp[f"h{i}"] = w, w / 2
        comps.append((src, setting))
        want_w.append(w)
    m = inputs.mix(comps, n=extra_n)
    size = max(n_i for _, n_i, _, _ in parts) if extra_n is None else extra_n
    assert m.n == size
    idx = np.asarray(data.draw(index_batch(size), label="idx"))
    want = np.zeros((B, 784))
    for i, ((src, _), w) in enumerate(zip(comps, want_w)):
        k = key if i == 0 else jax.random.fold_in(jax.random.fold_in(key, 0xFFFF_FFFF), i)  # inputs.MIX_STREAM
        want += w * draw(src, idx % src.n, k).astype(np.float64)
    np.testing.assert_allclose(draw(m, idx, key, hp), want, rtol=1e-5, atol=1e-5)


def test_no_derived_key_is_an_example_key():
    """A random source draws example j < 2³¹ (int32) from ``fold_in(key, j)``; every key derived from an input
    key (a mixture's components, the subspace basis, a noise kind of the input-families study, a fresh
    generation of the teacher-task study) folds in a distinct stream constant in [2³¹, 2³²). Checked on the
    constants and, for the derived keys the studies use, against every example key of a 70,000-example set
    (the old kind stream 7000 + k was the key of the paper's noise example 7000 + k)."""
    from subliminal_mlp.studies import input_families, teacher_task

    streams = [inputs.MIX_STREAM, inputs.BASIS_STREAM, input_families.KIND_STREAM, teacher_task.GENERATION_STREAM]
    assert len(set(streams)) == len(streams) and all(2**31 <= s < 2**32 for s in streams)
    assert inputs.MAX_EXAMPLES == np.iinfo(np.int32).max
    key = jax.random.PRNGKey(0)
    examples = {tuple(k) for k in np.asarray(jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(70_000)))}
    derived = [input_families.kind_key(key, k) for k in range(1, len(input_families.KINDS))]
    derived += [jax.random.fold_in(key, s) for s in streams]  # the basis's key, and each stream's own
    derived += [jax.random.fold_in(jax.random.fold_in(key, s), i)  # mix components, fresh generations
                for s in (inputs.MIX_STREAM, teacher_task.GENERATION_STREAM) for i in range(1, 6)]
    assert not {tuple(np.asarray(k)) for k in derived} & examples
    assert tuple(np.asarray(jax.random.fold_in(key, 7001))) in examples  # the check can see a collision


@FAST
@given(d=st.sampled_from([12, 30]), frac=st.sampled_from([0.0, 0.5, 1.0]), named=st.booleans(), seed=seeds,
       n=st.integers(1, 10**6), data=st.data())
def test_subspace_is_the_rescaled_projection_onto_the_documented_random_basis(d, frac, named, seed, n, data):
    """``subspace(k)``: example j is ``√(d/k) · Q Qᵀ u_j``, ``Q`` an orthonormal basis of the span of the first k
    columns of a Gaussian ``d × cols`` matrix drawn from ``fold_in(key, BASIS_STREAM)`` (cols = k, or ``max_k``
    when k is a hyperparameter name), ``u_j`` the base's example j. The projector ``Q Qᵀ`` is computed here in
    float64 with numpy's QR (it does not depend on the QR's sign convention); k = d gives the base itself."""
    k_static = max(1, round(frac * d))
    base, key = inputs.uniform(n, shape=(d,)), jax.random.PRNGKey(seed)
    if named:
        max_k = data.draw(st.sampled_from(sorted({k_static, d})), label="max_k")
        k = data.draw(st.integers(1, max_k), label="k")
        src, hp, cols = inputs.subspace("k", base, max_k=max_k), {"k": jnp.float32(k)}, max_k
    else:
        k, src, hp, cols = k_static, inputs.subspace(k_static, base), {}, k_static
    idx = data.draw(index_batch(n), label="idx")
    g = np.asarray(jax.random.normal(jax.random.fold_in(key, inputs.BASIS_STREAM), (d, cols), jnp.float32), np.float64)
    q = np.linalg.qr(g)[0][:, :k]
    u = draw(base, idx, key).astype(np.float64)
    want = math.sqrt(d / k) * u @ q @ q.T
    x = draw(src, idx, key, hp)
    assert x.shape == (B, d)
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-4 * math.sqrt(d / k))


@FAST
@given(sigma=st.just(0.0) | st.floats(0.05, 3.0) | st.floats(3.0, 50.0), radius=st.sampled_from([1, 3, 6, 14, 20]),
       by_name=st.booleans(),
       seed=seeds, n=st.integers(1, 10**6), data=st.data())
def test_blurred_is_the_circular_gaussian_convolution_along_rows_and_columns(sigma, radius, by_name, seed, n, data):
    """``blurred(σ, radius=r)``: each 28 × 28 example convolved circularly along rows and columns with the weights
    ``exp(−i²/2σ²)``, ``i = −r..r``, scaled to unit squared norm (σ = 0: the identity); a kernel wider than the
    image (2r + 1 > 28) wraps, and is scaled so that its wrapped taps (those at equal offsets mod 28 add up) have
    unit squared norm. Written out here as a sum of ``np.roll``s in float64, for σ a number or a hyperparameter
    name."""
    key, idx = jax.random.PRNGKey(seed), data.draw(index_batch(n), label="idx")
    setting, hp = ("s", {"s": sigma}) if by_name else (sigma, {})
    x = draw(inputs.blurred(setting, inputs.uniform(n), radius=radius), idx, key, hp)
    i = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (i / sigma) ** 2) if sigma > 0 else (i == 0).astype(float)
    wrapped = np.zeros(28)
    np.add.at(wrapped, i % 28, w)
    w /= np.sqrt(np.sum(wrapped ** 2))
    img = draw(inputs.uniform(n), idx, key).astype(np.float64).reshape(B, 28, 28)
    rows = sum(wa * np.roll(img, a, axis=1) for a, wa in zip(i, w))
    want = sum(wb * np.roll(rows, b, axis=2) for b, wb in zip(i, w)).reshape(B, 784)
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-5)


@FAST
@given(n=st.integers(1, 300), by_name=st.booleans(), pool_size=st.sampled_from([1, 6, 17]), seed=seeds, data=st.data())
def test_cycled_shows_example_j_mod_distinct_and_images_are_the_pools_rows(n, by_name, pool_size, seed, data):
    """``cycled(base, d)``: position j shows the base's example ``j mod d`` (d a number or a hyperparameter name),
    over the base's ``n`` positions. ``images(pool, n)``: example j is ``pool[j]``, the set is the pool's first
    n rows (all by default), and a pool with fewer than n rows is an InputError; ``images("task", n)`` is the
    same once the task's images are bound."""
    key, base = jax.random.PRNGKey(seed), inputs.gaussian(n)
    distinct = data.draw(st.integers(1, n), label="distinct")
    setting, hp = ("d", {"d": jnp.float32(distinct)}) if by_name else (distinct, {})
    src = inputs.cycled(base, setting)
    idx = np.asarray(data.draw(index_batch(n), label="idx"))
    assert src.n == n
    np.testing.assert_array_equal(draw(src, idx, key, hp), draw(base, idx % distinct, key))

    pool = np.random.default_rng(seed).normal(size=(pool_size, 784)).astype(np.float32)
    for too_many in {pool_size + 1, pool_size + data.draw(st.integers(1, 100), label="over")}:
        with pytest.raises(sm.InputError, match=f"n = {too_many} is larger than the pool's {pool_size} images"):
            inputs.images(pool, too_many)
        with pytest.raises(sm.InputError, match=f"n = {too_many} is larger"):
            inputs.bind_task(inputs.images("task", too_many), pool)
    first = data.draw(st.none() | st.just(pool_size) | st.integers(1, pool_size), label="first")
    size = pool_size if first is None else first
    rows = np.asarray(data.draw(index_batch(size), label="rows"))
    for src in (inputs.images(pool, first), inputs.bind_task(inputs.images("task", first), pool)):
        assert src.n == size
        np.testing.assert_array_equal(draw(src, rows, None), pool[rows])


# ----------------------------------------------------------------------------- statistics and records

finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(finite, min_size=1, max_size=40), shift=finite,
       scale=st.just(0.0) | st.floats(1e-3, 100) | st.floats(-100, -1e-3))
def test_mean_ci95_is_the_mean_and_1_96_sample_sd_over_root_n(values, shift, scale):
    """results.mean_ci95: ``(mean, 1.96 · sd / √n)`` with the *sample* sd (ddof = 1), None for one value (README,
    protocol.md §1). Against Python's ``statistics`` (exact rational arithmetic); and its invariants: a shift
    moves the mean and not the half-width, a scale by a multiplies the half-width by |a|; summary and
    mean_ci95_columns give the same numbers."""
    n = len(values)
    mean, ci = sm.mean_ci95(values)
    tol = 1e-9 * (1 + max(abs(v) for v in values))
    assert mean == pytest.approx(statistics.fmean(values), rel=1e-12, abs=tol)
    if n == 1:
        assert ci is None
    else:
        assert ci == pytest.approx(1.96 * statistics.stdev(values) / math.sqrt(n), rel=1e-9, abs=tol)
        shifted, scaled = (sm.mean_ci95([v + shift for v in values])[1], sm.mean_ci95([scale * v for v in values])[1])
        assert shifted == pytest.approx(ci, rel=1e-6, abs=1e-9 * (1 + abs(shift)) + tol)
        assert scaled == pytest.approx(abs(scale) * ci, rel=1e-6, abs=abs(scale) * tol)
    s = results.summary(values)
    assert (s["mean"], s["ci95"], s["values"]) == (mean, ci, [float(v) for v in values])
    cols = results.mean_ci95_columns(np.stack([values, values[::-1]], axis=1))
    assert cols["mean"][0] == mean and cols["ci95"][0] == ci
    assert cols["mean"][1] == pytest.approx(mean, rel=1e-12, abs=tol)


accuracy = st.floats(0, 1) | st.sampled_from([math.nan, math.inf, -math.inf])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), order=st.permutations(MODELS), runs=st.integers(1, 6), chance=st.floats(0, 0.5),
       margin=st.floats(0, 0.2), check_teacher=st.booleans())
def test_health_lists_exactly_the_nonfinite_models_and_the_runs_whose_teacher_is_not_better(
        data, order, runs, chance, margin, check_teacher):
    """results.health: ``nonfinite`` lists every (run, model) whose accuracy is not finite or whose parameters
    ended non-finite, run by run in column order; ``teacher_not_better`` every run whose teacher's accuracy is not
    above ``max(reference, chance) + margin`` (NaN included); ``ok`` when both are empty. Columns are found by
    name, whatever their order. Written out here with plain loops."""
    acc = data.draw(st.lists(st.lists(accuracy, min_size=6, max_size=6), min_size=runs, max_size=runs), label="acc")
    fin = data.draw(st.none() | st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=runs,
                                         max_size=runs), label="finite")
    h = results.health(order, acc, fin, chance=chance, check_teacher=check_teacher, margin=margin)
    want_nonfinite = [[r, order[j]] for r in range(runs) for j in range(6)
                      if not math.isfinite(acc[r][j]) or (fin is not None and not fin[r][j])]
    t, ref = order.index("teacher"), order.index("reference")
    want_not_better = [r for r in range(runs) if not acc[r][t] > max(acc[r][ref], chance) + margin] if check_teacher else []
    assert h == {"ok": not want_nonfinite and not want_not_better, "nonfinite": want_nonfinite,
                 "teacher_not_better": want_not_better, "teacher_margin": margin}
    json.dumps(h, allow_nan=False)  # plain JSON: Python ints, strings and bools only


# Payload keys that envelope() takes as its own arguments, or that are envelope keys.
_RESERVED = set(results.ENVELOPE_KEYS) | {"seed", "devices", "environment_extra", "runs"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([math.nan, math.inf, -math.inf]) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)


def same_json(a, b):
    """Equality of JSON values with NaN equal to NaN (a diverged run's accuracy is written as NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=30, deadline=None)
@given(payload=st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in _RESERVED), json_values,
                               max_size=5),
       n_runs=st.integers(1, 5), seed=seeds, fmt=st.sampled_from(sorted(set(results.FORMATS) - set(results.REQUIRED_KEYS))))
def test_a_record_written_is_read_back_unchanged(payload, n_runs, seed, fmt):
    """envelope + write_record + read_results: any JSON payload (nested lists and objects, any text, integers
    beyond 64 bits, ±inf and NaN, which the records use for a diverged run) comes back equal, keys in the same
    order, after the envelope's keys in the documented order."""
    record = results.envelope(fmt, Config(n_runs=n_runs), n_runs=n_runs, seed=seed, data={"dataset": "mnist"},
                              **payload)
    with tempfile.TemporaryDirectory() as out:
        back = results.read_results(results.write_record(record, out, "rec")["json"], format=fmt)
    assert same_json(back, json.loads(json.dumps(record)))  # tuples would come back as lists; none here
    assert same_json(back, record)
    assert list(back) == ["format", "format_version", "config", "n_runs", "seeds", *payload,
                          "data", "environment", "timing", "created"]
    assert back["seeds"] == {"seed": seed, "runs": list(range(n_runs))}
    assert Config.from_dict(back["config"]) == Config(n_runs=n_runs)


# ----------------------------------------------------------------------------- Config

positive_ints = st.integers(1, 10**6)


@settings(max_examples=200, deadline=None)
@given(a=st.floats(allow_nan=False, allow_infinity=False), b=st.floats(allow_nan=False, allow_infinity=False))
def test_a_sweep_value_label_reads_back_as_its_value_so_two_values_never_share_a_file(a, b):
    from subliminal_mlp.studies.sweep import value_label

    assert float(value_label(a)) == a
    same = a == b and math.copysign(1, a) == math.copysign(1, b)  # (-0.0 == 0.0, labelled "-0" and "0")
    assert (value_label(a) == value_label(b)) == same
    assert value_label((a, b)) == f"{value_label(a)},{value_label(b)}"
    # %g where it reads back (the labels of the committed sweeps), in full where it does not
    assert [value_label(x) for x in (0.1, 1.0, 1e-05, 2.5e-3, 0.1000001, 1 / 3)] == [
        "0.1", "1", "1e-05", "0.0025", "0.1000001", "0.3333333333333333"]


@st.composite
def valid_configs(draw):
    n_noise = draw(positive_ints)
    loss = draw(st.sampled_from(LOSSES))
    student_inputs = draw(st.sampled_from(STUDENT_INPUTS))
    return dict(
        hidden_widths=tuple(draw(st.lists(st.integers(1, 4096), min_size=1, max_size=4))),
        aux_logits=draw(st.integers(1, 100)), n_classes=draw(st.integers(2, 100)), input_dim=draw(positive_ints),
        learning_rate=draw(st.floats(1e-12, 1e3) | st.integers(1, 10)), batch_size=draw(st.integers(1, n_noise)),
        teacher_epochs=draw(st.integers(0, 1000)), student_epochs=draw(st.integers(0, 1000)), n_noise=n_noise,
        loss=loss, n_runs=draw(positive_ints), seed=draw(seeds), dataset=draw(st.sampled_from(DATASETS)),
        temperature=1.0 if loss == "mse" else draw(st.floats(1e-6, 1e6)), student_inputs=student_inputs,
        input_mix=draw(st.floats(0, 1)) if student_inputs == "mix" else 0.5, init_noise=draw(st.floats(0, 1e3)),
        init_noise_kind=draw(st.sampled_from(INIT_NOISE_KINDS)), run_batch=draw(st.none() | positive_ints))


@settings(max_examples=60, deadline=None)
@given(fields=valid_configs(), dropped=st.sets(st.sampled_from(sorted(Config.__dataclass_fields__))))
def test_config_to_dict_from_dict_through_json_is_the_identity(fields, dropped):
    """A Config is "written verbatim into every results JSON": for any valid settings, ``to_dict`` is plain JSON
    holding every field, and ``from_dict`` of it, after a JSON round trip, gives the same Config. A dict that
    lacks some fields (a record older than them) gives their defaults."""
    c = Config(**fields)
    d = c.to_dict()
    assert set(d) == set(Config.__dataclass_fields__) and d["hidden_widths"] == list(fields["hidden_widths"])
    assert Config.from_dict(json.loads(json.dumps(d, allow_nan=False))) == c
    older = {k: v for k, v in d.items() if k not in dropped}
    try:
        want = Config(**{k: v for k, v in fields.items() if k not in dropped})
    except ConfigError:  # the defaults of the dropped fields do not fit the rest (e.g. batch_size 1024 > n_noise)
        with pytest.raises(ConfigError):
            Config.from_dict(older)
    else:
        assert Config.from_dict(older) == want


# Each special value in a branch of its own, so that every one is drawn within a few examples.
not_ints = st.booleans() | st.floats(allow_nan=True).filter(lambda v: not (math.isfinite(v) and v == int(v))) \
    | st.sampled_from([math.nan, math.inf, 2.5, float(2**40) + 0.5]) | st.text(max_size=3) | st.none()
not_positive_numbers = (st.floats(max_value=0.0) | st.just(0.0) | st.just(math.nan) | st.just(math.inf)
                        | st.booleans() | st.sampled_from(["1", None]))


def invalid_int(low):
    """Integers below ``low`` (``low - 1`` itself often) and anything that is not an integer."""
    return st.integers(max_value=low - 1) | st.just(low - 1) | not_ints


def invalid_choice(allowed):
    return st.text(max_size=12).filter(lambda v: v not in allowed) | st.integers() | st.none()


INVALID = {
    "hidden_widths": st.just(()) | st.lists(invalid_int(1), min_size=1, max_size=3).map(lambda w: (8, *w))
    | st.text(max_size=3) | st.integers(),
    "aux_logits": invalid_int(1), "n_classes": invalid_int(2), "input_dim": invalid_int(1),
    "learning_rate": not_positive_numbers, "batch_size": invalid_int(1), "teacher_epochs": invalid_int(0),
    "student_epochs": invalid_int(0), "n_noise": invalid_int(1), "loss": invalid_choice(LOSSES),
    "n_runs": invalid_int(1), "seed": invalid_int(0) | st.just(2**32) | st.integers(min_value=2**32),
    "dataset": invalid_choice(DATASETS), "temperature": not_positive_numbers,
    "student_inputs": invalid_choice(STUDENT_INPUTS),
    "input_mix": st.floats(max_value=-1e-9) | st.floats(min_value=1 + 1e-9) | st.just(math.nan) | st.booleans()
    | st.sampled_from(["0.5", None]),
    "init_noise": st.floats(max_value=-1e-300) | st.just(math.nan) | st.just(math.inf) | st.booleans()
    | st.sampled_from(["0", None]),
    "init_noise_kind": invalid_choice(INIT_NOISE_KINDS), "run_batch": invalid_int(1).filter(lambda v: v is not None),
}


def _edges_int(low):
    return [low - 1, True, False, 2.5, math.nan, math.inf, None, str(low)]


_EDGES_NUMBER = [0.0, -0.0, -1e-300, math.nan, math.inf, -math.inf, True, False, None, "1"]
#: The edge values of each field, every one checked with every generated Config: the boundary just outside the
#: valid range, booleans, NaN and infinity, None, a string.
EDGES = {
    "hidden_widths": [(), (8, 0), (8, True), (8, 2.5), (8, None), "256", 256, None],
    "aux_logits": _edges_int(1), "n_classes": _edges_int(2), "input_dim": _edges_int(1),
    "learning_rate": _EDGES_NUMBER, "batch_size": _edges_int(1), "teacher_epochs": _edges_int(0),
    "student_epochs": _edges_int(0), "n_noise": _edges_int(1), "loss": ["KL", "", None, 0],
    "n_runs": _edges_int(1), "seed": [-1, 2**32, True, False, 0.0, math.nan, None, "0"],
    "dataset": ["MNIST", "", None], "temperature": _EDGES_NUMBER, "student_inputs": ["Uniform", "", None],
    "input_mix": [-1e-300, 1 + 2**-52, math.nan, math.inf, True, False, None, "0.5"],
    "init_noise": [-1e-300, math.nan, math.inf, True, False, None, "0"],
    "init_noise_kind": ["Isotropic", "", None], "run_batch": [0, -1, True, False, 2.5, math.inf, "1"],
}


@pytest.mark.parametrize("field", sorted(INVALID))
@settings(max_examples=40, deadline=None)
@given(fields=valid_configs(), data=st.data())
def test_an_invalid_field_raises_a_config_error_that_names_it(field, fields, data):
    """Config: "Invalid values raise ConfigError at construction"; "the message names the field". Any valid
    settings with one field made invalid (out of range, of the wrong type, a boolean for a number, NaN or
    infinity, an unknown name) raise a ConfigError whose message starts with that field's name; a random invalid
    value, and every edge value of the field (EDGES). Booleans are not numbers here (``is_integer``,
    ``check_positive_number``: "booleans are not")."""
    if field == "input_mix":
        fields["student_inputs"] = "mix"  # else any value but the default is refused as having no effect
    for bad in [data.draw(INVALID[field], label="value"), *EDGES[field]]:
        try:
            Config(**{**fields, field: bad})
        except ConfigError as e:
            assert re.match(rf"{re.escape(field)}\b", str(e)), (field, bad, str(e))
        else:
            raise AssertionError(f"Config({field}={bad!r}) was accepted")


@settings(max_examples=40, deadline=None)
@given(fields=valid_configs(), extra=st.integers(1, 10**6))
def test_a_batch_larger_than_the_noise_set_and_a_temperature_with_mse_name_their_field(fields, extra):
    """The two cross-field rules: ``batch_size > n_noise`` and a temperature ≠ 1 with ``loss = "mse"``."""
    with pytest.raises(ConfigError, match=rf"^batch_size = {fields['n_noise'] + extra} is larger than n_noise"):
        Config(**{**fields, "batch_size": fields["n_noise"] + extra})
    with pytest.raises(ConfigError, match=r"^temperature = .* has no meaning for loss = 'mse'"):
        Config(**{**fields, "loss": "mse", "temperature": 1.0 + extra / 1e3})


# ----------------------------------------------------------------------------- IDX files


@settings(max_examples=60, deadline=None)
@given(a=arrays(np.uint8, array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)), extra=st.binary(min_size=1, max_size=3),
       cut=st.integers(1, 10))
def test_parse_idx_reads_back_any_uint8_array_and_refuses_a_wrong_length(a, extra, cut):
    """data.parse_idx: an IDX file (00 00 08 ndim, one big-endian uint32 per dimension, the bytes), built here by
    hand and passed through gzip as on disk, parses to the same array, read-only; a payload a byte short or long
    is a DataError that says so."""
    raw = gzip.decompress(gzip.compress(bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()))
    out = parse_idx(raw, source="x.idx")
    assert out.dtype == np.uint8 and out.shape == a.shape and not out.flags.writeable
    np.testing.assert_array_equal(out, a)
    with pytest.raises(DataError, match="x.idx: IDX payload length mismatch.*trailing data"):
        parse_idx(raw + extra, source="x.idx")
    if a.size:
        with pytest.raises(DataError, match="x.idx: .*truncated"):
            parse_idx(raw[:-min(cut, a.size)], source="x.idx")


# ----------------------------------------------------------------------------- losses


def log_softmax64(z):
    z = np.asarray(z, np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


logit_shapes = st.tuples(st.sampled_from([1, 3]), st.sampled_from([2, 10]), st.sampled_from([1, 3]))


@settings(max_examples=30, deadline=None)
@given(shape=logit_shapes, seed=seeds, spread=st.floats(0.1, 20), data=st.data())
def test_class_cross_entropy_and_mse_match_numpy(shape, seed, spread, data):
    """class_cross_entropy: the batch *mean* of ``−log softmax(z[:n_classes])[label]``, aux logits ignored;
    mse_distillation: the batch *sum* of ``Σ_i w_i (z_i − y_i)²``, each example weighted by its example weight.
    Against float64 numpy on random logits, labels and non-negative weights."""
    b, c, m = shape
    rng = np.random.default_rng(seed)
    z, y = (spread * rng.normal(size=(b, c + m)).astype(np.float32) for _ in range(2))
    labels = np.asarray(data.draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b), label="labels"))
    want_ce = -np.mean(log_softmax64(z[:, :c])[np.arange(b), labels])
    assert float(class_cross_entropy(jnp.asarray(z), jnp.asarray(labels), c)) == pytest.approx(want_ce, rel=1e-5, abs=1e-5)
    w = rng.uniform(0, 2, size=c + m).astype(np.float32) * (rng.uniform(size=c + m) < 0.7)
    ew = rng.uniform(0, 3, size=b).astype(np.float32)
    sq = (z.astype(np.float64) - y) ** 2 * w
    assert float(mse_distillation(jnp.asarray(z), jnp.asarray(y), jnp.asarray(w))) == pytest.approx(sq.sum(), rel=1e-5, abs=1e-5)
    got = float(mse_distillation(jnp.asarray(z), jnp.asarray(y), jnp.asarray(w), jnp.asarray(ew)))
    assert got == pytest.approx((ew[:, None] * sq).sum(), rel=1e-5, abs=1e-5)


@settings(max_examples=30, deadline=None)
@given(shape=logit_shapes, outputs=st.sampled_from(["aux", "all", "class"]), T=st.floats(0.1, 10) | st.just(1.0),
       by_name=st.booleans(), weighted=st.booleans(), seed=seeds)
@example(shape=(1, 2, 1), outputs="all", T=7.884765625, by_name=False, weighted=True, seed=161)  # failed at abs=1e-5
def test_a_students_kl_at_temperature_t_is_t_squared_times_the_softened_kl(shape, outputs, T, by_name, weighted, seed):
    """students.py: at temperature T the loss is ``T² · loss(z/T, y/T, mask, w)`` (Hinton et al.); for "kl" that is
    ``T² Σ_b w_b KL(softmax(y_S/T) ‖ softmax(z_S/T))`` over the student's logits S; "a user's loss too" (here
    ``Σ m|z − y|``, which becomes ``T Σ m|z − y|``); "mse" is its plain weighted sum whatever T. Against float64
    numpy, for T a number or the hyperparameter "temperature". (engine._distillation_loss is the one place a
    student's temperature is applied; tests/test_engine.py reaches it the same way.)"""
    from subliminal_mlp.core.engine import _distillation_loss

    b, c, m = shape
    rng = np.random.default_rng(seed)
    z, y = (3 * rng.normal(size=(b, c + m)).astype(np.float32) for _ in range(2))
    mask = np.asarray(output_mask(outputs, c, m))
    ew = rng.uniform(0, 2, size=b).astype(np.float32) if weighted else None
    student, hp = (sm.Student("s"), {"temperature": T}) if by_name else (sm.Student("s", temperature=T), {})
    on = mask > 0
    logp, logq = log_softmax64(y[:, on] / np.float64(T)), log_softmax64(z[:, on] / np.float64(T))
    per_example = np.sum(np.exp(logp) * (logp - logq), axis=1)
    want = T**2 * np.sum(per_example if ew is None else ew * per_example)
    args = (jnp.asarray(z), jnp.asarray(y), jnp.asarray(mask)) + (() if ew is None else (jnp.asarray(ew),))
    # float32 log-softmaxes round each log-probability by ~1e-7 (|log p| ~ 1 here); a KL near 0 is a difference of
    # such numbers, so its absolute error does not shrink with it, and T² and the weights scale it up.
    tol = 1e-5 + 2e-6 * T**2 * (b if ew is None else float(ew.sum()))
    assert float(_distillation_loss(student, hp)(*args)) == pytest.approx(want, rel=1e-4, abs=tol)
    mse = sm.Student("s", loss="mse")  # T from the hyperparameter (a number other than 1 is refused: unused)
    want_mse = np.sum((z.astype(np.float64) - y) ** 2 * mask * (1 if ew is None else ew[:, None]))
    assert float(_distillation_loss(mse, {"temperature": T})(*args)) == pytest.approx(want_mse, rel=1e-5, abs=1e-5)
    l1 = sm.Student("s", loss=lambda z, y, m, w=None: jnp.sum(m * jnp.abs(z - y)), temperature=T)
    want_l1 = T * np.sum(np.abs(z.astype(np.float64) - y) * mask)
    assert float(_distillation_loss(l1, {})(*args)) == pytest.approx(want_l1, rel=1e-5, abs=1e-5)
