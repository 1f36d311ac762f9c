"""The teacher cache: reused teachers give bit-identical numbers, a damaged entry is recomputed and
replaced (never used), and the key changes with every setting a teacher depends on."""

from __future__ import annotations

import os

import numpy as np
import pytest

import subliminal_mlp as sm
from subliminal_mlp import engine, inputs
from subliminal_mlp.core.teacher_cache import (CorruptEntry, TeacherCache, default_teacher_dir, key_digest, teacher_key,
                                          use_teacher_cache)

TINY = sm.Experiment(model=sm.mlp((16,)), teacher_epochs=1, student_epochs=1, batch_size=512,
                     inputs=inputs.uniform(1024))


@pytest.fixture(scope="module")
def task(data_root):
    return engine.Task.from_dataset(sm.load_mnist(data_root))


def test_cold_and_warm_cache_give_identical_numbers_and_a_damaged_entry_is_retrained(task, tmp_path):
    cache = TeacherCache(tmp_path / "teachers", log=lambda s: None)
    cold = sm.run(TINY, task, n_runs=3, run_batch=1, teacher_cache=cache)
    assert cold.teacher_cache == "miss" and cache.stats()["stored"] == 3 and cold.teachers is None
    with use_teacher_cache(cache):  # what the experiment functions see inside `subliminal-mlp figures`
        warm = sm.run(TINY, task, n_runs=3, run_batch=1)
    assert warm.teacher_cache == "hit" and cache.stats()["hits"] == 3
    np.testing.assert_array_equal(warm.accuracies, cold.accuracies)
    # The records say which entry: the one directory of the cache
    assert warm.record()["teachers"] == "cache" and cold.record()["teachers"] == "trained"
    assert warm.record()["teacher_cache"] == {"state": "hit", "key": warm_key(cache)}
    assert cold.record()["teacher_cache"] == {"state": "miss", "key": warm_key(cache)}
    assert "teacher_cache" not in sm.run(TINY, task, n_runs=1, teacher_cache=False).record()
    # The cache's directory, as the command line's --teacher-cache takes it: the same entries
    by_path = sm.run(TINY, task, n_runs=3, run_batch=1, teacher_cache=str(tmp_path / "teachers"))
    assert by_path.teacher_cache == "hit"
    np.testing.assert_array_equal(by_path.accuracies, cold.accuracies)
    # run 1's entry damaged: a 2-run experiment finds it, trains its teachers again and replaces it
    run1 = next((tmp_path / "teachers").glob("*/run-00001.teacher"))
    run1.write_bytes(run1.read_bytes()[:5000])
    fewer = sm.run(TINY, task, n_runs=2, run_batch=1, teacher_cache=cache)
    assert fewer.teacher_cache == "miss" and cache.stats()["corrupt"] == 1 and cache.stats()["stored"] == 4
    # run i's teacher does not depend on the number of runs: reference, teacher and the shared-init
    # students of runs 0-1 are those of the 3-run experiment (the cross students pair runs differently)
    np.testing.assert_array_equal(fewer.accuracies[0, :, :4], cold.accuracies[0, :2, :4])
    assert cache.load(warm_key(cache), 3, TINY.model.init(engine.run_key(0, 0))) is not None


def test_the_cache_is_not_used_where_its_teachers_would_not_be_the_runs_own(task, tmp_path):
    # Swept seeds or learning rates train other teachers per value; tracked losses need the teacher's loss, which
    # a cached teacher does not have: the cache is neither read nor written, and the log says why.
    import jax

    cache = TeacherCache(tmp_path / "teachers", log=lambda s: None)
    device = jax.devices()[0]
    cases = [(TINY, {"seed": [0, 1]}, "the seed or the learning rate is swept"),
             (TINY, {"learning_rate": [1e-3, 2e-3]}, "the seed or the learning rate is swept"),
             (TINY.replace(track_losses=True), {}, "losses are tracked"),
             (TINY.replace(teacher_epochs=0), {}, "teacher_epochs = 0")]
    for exp, sweep, why in cases:
        said = []
        got, key = engine._teacher_cache_key(cache, exp, task, sweep, 0, 2, 1, 1, device, 1, said.append)
        assert got is cache and key is None and said == [f"teacher cache not used: {said[0].split(': ', 1)[1]}"]
        assert why in said[0], (why, said)
    said = []
    assert engine._teacher_cache_key(cache, TINY, task, {"temperature": [1.0, 2.0]}, 0, 2, 1, 1, device, 1,
                                     said.append)[1] is not None and not said  # other sweeps keep the teachers
    # through the engine: a tracked-loss run neither reads nor stores, and its teacher losses are its own
    r = sm.run(TINY.replace(track_losses=True), task, n_runs=1, teacher_cache=cache)
    assert r.teacher_cache is None and cache.stats()["stored"] == 0 and np.isfinite(r.teacher_loss).all()


def warm_key(cache):
    """The key of the only entry directory in ``cache`` (from its key.json)."""
    import json

    (d,) = [p for p in cache.root.iterdir() if p.is_dir()]
    return json.loads((d / "key.json").read_text())


def _params(seed=0):
    return TINY.model.init(engine.run_key(seed, 0))


def _key(**changes):
    rng = np.random.default_rng(0)
    t = engine.Task(rng.random((64, 784), np.float32), rng.integers(0, 10, 64), rng.random((8, 784), np.float32),
                    rng.integers(0, 10, 8), 10)
    settings = {"seed": 0, "run_batch": 1, "n_runs": 10, "n_devices": 1, "platform": "cpu", "device_kind": "cpu",
                "learning_rate": 3e-4}
    exp_changes = {k: changes.pop(k) for k in list(changes) if k in ("model", "teacher_epochs", "batch_size",
                                                                     "track_losses", "student_epochs", "students",
                                                                     "inputs")}
    if {"train_x", "train_y", "n_classes"} & set(changes):
        t = engine.Task(changes.pop("train_x", t.train_x), changes.pop("train_y", t.train_y), t.test_x, t.test_y,
                        changes.pop("n_classes", 10))
    return key_digest(teacher_key(TINY.replace(**exp_changes), t, **{**settings, **changes}))


def test_the_key_changes_with_every_teacher_setting_and_only_with_those():
    base = _key()
    changed = {"model": sm.mlp((32,)), "teacher_epochs": 2, "batch_size": 256, "track_losses": True, "seed": 1,
               "learning_rate": 1e-3, "run_batch": 2, "platform": "gpu", "device_kind": "H100",
               "train_x": np.zeros((64, 784), np.float32)}
    keys = {name: _key(**{name: value}) for name, value in changed.items()}
    keys["aux_logits"] = _key(model=sm.mlp((16,), aux_logits=5))
    keys["activation"] = _key(model=sm.mlp((16,), activation="tanh"))
    assert base not in keys.values() and len(set(keys.values())) == len(keys), keys
    # settings of the students only: the same teachers, shared
    assert _key(student_epochs=3, students=sm.FIGURE10[:1], inputs=inputs.gaussian(2048)) == base
    assert _key(n_runs=3) == base  # one run per batch: run i's teacher is the same for any number of runs
    assert _key(run_batch=2, n_runs=3) != _key(run_batch=2)  # batched runs: grouped differently
    # a lambda is identified by its code: another body is another key, the same function the same key
    same = lambda x: x  # noqa: E731
    assert _key(model=sm.mlp((16,), activation=same)) == _key(model=sm.mlp((16,), activation=same))
    assert _key(model=sm.mlp((16,), activation=lambda x: x)) != _key(model=sm.mlp((16,), activation=lambda x: -x))


def test_the_key_names_the_labels_classes_grouping_and_numeric_modes():
    """Settings a teacher depends on beyond those above: a collision would hand one teacher the other's params."""
    import jax

    base = _key()
    rng = np.random.default_rng(1)
    # the same images with other labels, or with more classes: another task, another teacher
    assert _key(train_y=rng.integers(0, 10, 64)) != base
    assert _key(n_classes=12) != base
    # batched runs: how runs are split over devices changes rounding (module docstring: "with more than one,
    # also the number of runs and devices"); one run per batch: the device count is not in the key
    assert _key(run_batch=2, n_devices=2) != _key(run_batch=2)
    assert _key(n_devices=2) == base
    # x64 and the default matmul precision change a float32 program's numbers: both are in the key
    with jax.enable_x64(True):
        wide = _key()
    assert wide != base
    with jax.default_matmul_precision("bfloat16"):
        bf16 = _key()
    with jax.default_matmul_precision("float32"):
        f32 = _key()
    assert bf16 != f32
    # batched runs: the number of swept values in the program regroups the runs too
    assert _key(run_batch=2, n_values=2) != _key(run_batch=2) and _key(n_values=2) == base
    # the PRNG implementation and the partitionable threefry change the teachers' initialisation
    with jax.default_prng_impl("rbg"):
        assert _key() != base
    prev = jax.config.jax_threefry_partitionable
    try:
        jax.config.update("jax_threefry_partitionable", not prev)
        assert _key() != base
    finally:
        jax.config.update("jax_threefry_partitionable", prev)
    assert _key() == base


def test_the_key_holds_the_training_code_and_the_libraries_and_an_array_changed_in_place_is_hashed_again(
        monkeypatch):
    from subliminal_mlp.core import results, teacher_cache as tc

    base = _key()
    key = teacher_key(TINY, engine.Task(np.ones((4, 784), np.float32), np.zeros(4), np.ones((4, 784)), np.zeros(4), 10),
                      seed=0, run_batch=1, n_runs=1, n_devices=1, platform="cpu", device_kind="cpu", learning_rate=3e-4)
    assert key["flax"] and key["optax"] and key["core_source"] == tc.core_source_digest()
    monkeypatch.setattr(tc, "_CORE_SOURCE", ["another version of the training code"])
    assert _key() != base
    monkeypatch.undo()
    assert _key() == base
    # What XLA compiles for: its flags, and on a CPU the host's vector instruction sets (a cache shared between
    # an AVX-512 machine and an AVX2 one); on a GPU the device kind says it.
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_fast_math=true")
    assert _key() != base
    monkeypatch.undo()
    assert _key() == base and _key(platform="gpu") == _key(platform="gpu")
    monkeypatch.setattr(tc, "host_vector_isa", lambda: "avx avx2 avx512f fma sse")
    assert _key() != base and _key(platform="gpu") == (monkeypatch.undo() or _key(platform="gpu"))
    from subliminal_mlp import internal

    monkeypatch.delenv(internal.DISABLE_ENV, raising=False)
    monkeypatch.setattr(internal, "CPU_COMPILER_OPTIONS", {**internal.CPU_COMPILER_OPTIONS, "xla_backend_optimization_level": 0})
    assert _key() != base and _key(platform="gpu") == (monkeypatch.undo() or _key(platform="gpu"))
    assert key["host_isa"] == tc.host_vector_isa() and key["xla_flags"] == os.environ.get("XLA_FLAGS", "").split()
    if os.path.exists("/proc/cpuinfo"):  # Linux: the flags the kernel lists, the vector ones among them
        flags = next(line for line in open("/proc/cpuinfo") if line.split(":")[0].strip() in ("flags", "Features"))
        assert set(key["host_isa"].split()) <= set(flags.split(":", 1)[1].split())
    a = np.ones((4, 3), np.float32)
    before = tc.array_digest(a)
    a[0, 0] = 2.0  # a writeable array: its digest is not memoised
    assert tc.array_digest(a) != before
    # A read-only flag can be set back, and a read-only view changes with what it views: not memoised either (a
    # relabelled task's teachers were read from the cache before). Only memory nothing can write is.
    b = np.ones((4, 3), np.float32)
    b.flags.writeable = False
    view = b[:]
    assert tc.array_digest(view) == before and id(view) not in results._DIGESTS
    b.flags.writeable = True
    b[0, 0] = 2.0
    b.flags.writeable = False
    assert tc.array_digest(view) != before
    frozen = np.frombuffer(np.ones((4, 3), np.float32).tobytes(), np.float32).reshape(4, 3)
    assert tc.array_digest(frozen) == before and results._DIGESTS[id(frozen)][0] is frozen
    data = sm.load_mnist()  # the loader's arrays are such
    assert results.immutable(data.train_images) and results.immutable(sm.Task.from_dataset(data).train_y)


def _init_two_layers(key):
    import jax

    k1, k2 = jax.random.split(key)
    return {"h": jax.random.normal(k1, (784, 8)) / 28.0, "o": jax.random.normal(k2, (8, 13)) / 8 ** 0.5}


def _apply_relu(p, x):
    return np.maximum(x @ p["h"], 0) @ p["o"]


def _apply_tanh(p, x):
    import jax.numpy as jnp

    return jnp.tanh(x @ p["h"]) @ p["o"]


def _act_a(x):
    return x


def _act_b(x):
    return -x


_act_b.__name__ = _act_b.__qualname__ = _act_a.__qualname__  # two functions that print alike (two scripts' `act`)


class _Net:
    """A model as an object's methods (its activation an attribute)."""

    def __init__(self, act):
        self.act = act

    def init(self, key):
        return _init_two_layers(key)

    def apply(self, p, x):
        return self.act(x @ p["h"]) @ p["o"]


def test_models_that_differ_only_in_their_functions_have_different_keys():
    """Two ``Model(init, apply)`` pairs, and two activations that print alike, are different teachers: their
    code is in the key (a collision would hand one model the other's teachers). The pairs' records name their
    functions; the activations' describe alike, so only the key tells them apart."""
    relu, tanh = sm.Model(_init_two_layers, _apply_relu), sm.Model(_init_two_layers, _apply_tanh)
    assert relu.describe()["apply"].endswith("_apply_relu") and tanh.describe()["apply"].endswith("_apply_tanh")
    assert _key(model=relu) != _key(model=tanh)
    assert _key(model=relu) == _key(model=sm.Model(_init_two_layers, _apply_relu))  # the same model built twice
    a, b = sm.mlp((16,), activation=_act_a), sm.mlp((16,), activation=_act_b)
    assert a.describe() == b.describe() and _key(model=a) != _key(model=b)
    assert _key(model=sm.mlp((16,))) == _key()  # the library's models: one key however often they are built
    # The methods of two objects of one class: the object is part of the key.
    tanh, relu = _Net(np.tanh), _Net(lambda x: np.maximum(x, 0))
    assert _key(model=sm.Model(tanh.init, tanh.apply)) != _key(model=sm.Model(relu.init, relu.apply))
    # Standard Flax layers hold local functions (their initialisers): identified by what they close over.
    import flax.linen as nn

    seq = sm.from_flax(nn.Sequential((nn.Dense(16), nn.relu, nn.Dense(13))))
    assert _key(model=seq) == _key(model=sm.from_flax(nn.Sequential((nn.Dense(16), nn.relu, nn.Dense(13)))))
    assert _key(model=seq) != _key(model=sm.from_flax(nn.Sequential((nn.Dense(32), nn.relu, nn.Dense(13)))))
    assert _key(model=sm.mlp((16,), activation="identity")) not in (_key(), None)


def _scaled(s):
    return lambda x: s * x


def _defaulted(d):
    def act(x, s=d):  # `d` is a default, not a closure: the function closes over nothing
        return s * x

    return act


def _kw_defaulted(d):
    def act(x, *, s=d):
        return s * x

    return act


class _Opaque:
    """A callable with no attributes (``__slots__``), no ``__qualname__`` and the default repr: unidentifiable."""

    __slots__ = ()

    def __call__(self, p, x):
        return _apply_relu(p, x)


def test_a_functions_closure_defaults_and_constants_are_part_of_its_identity():
    """Activations with one name, source and bytecode that compute different things (other closed-over values,
    other defaults, other constants) are different teachers: a shared key would hand one the other's teachers."""
    act = lambda f: _key(model=sm.mlp((16,), activation=f))  # noqa: E731
    assert act(_scaled(1.0)) != act(_scaled(2.0)) and act(_scaled(1.0)) == act(_scaled(1.0))
    # mlp's description names a closure's values; in an object's methods only the code identity sees them
    one, two = _Net(_scaled(1.0)), _Net(_scaled(2.0))
    one, two = sm.Model(one.init, one.apply), sm.Model(two.init, two.apply)
    assert one.describe() == two.describe() and _key(model=one) != _key(model=two)
    assert _defaulted(1.0).__closure__ is None and act(_defaulted(1.0)) != act(_defaulted(2.0))
    assert act(_kw_defaulted(1.0)) != act(_kw_defaulted(2.0))
    # constants: two lambdas on one line have one source and one bytecode, only their constants differ
    two, three = (lambda x: 2.0 * x), (lambda x: 3.0 * x)  # noqa: E731
    assert two.__code__.co_code == three.__code__.co_code and act(two) != act(three)
    # names: one source line, one bytecode, one set of constants; only the functions they call differ
    import jax.numpy as jnp

    tanh, sin = (lambda x: jnp.tanh(x)), (lambda x: jnp.sin(x))  # noqa: E731
    assert tanh.__code__.co_code == sin.__code__.co_code and tanh.__code__.co_consts == sin.__code__.co_consts
    assert act(tanh) != act(sin)
    # a Flax module class a factory makes: one name and source, its methods' closures differ (the same key before:
    # the second model got the first's teachers, initialised 1000x smaller)
    flax = lambda scale: sm.from_flax(_flax_net(scale), n_classes=10, aux_logits=3, input_shape=(784,))  # noqa: E731
    assert type(_flax_net(0.01)).__qualname__ == type(_flax_net(10.0)).__qualname__
    assert _key(model=flax(0.01)) != _key(model=flax(10.0)) and _key(model=flax(0.01)) == _key(model=flax(0.01))


def _flax_net(scale):
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(13, kernel_init=nn.initializers.normal(scale))(x)

    return Net()


def test_a_model_whose_code_cannot_be_identified_has_no_key():
    """An apply that is an object without attributes and without a repr of its own cannot be told apart from
    another such object: no key (None, the engine then trains the teachers), rather than a shared one."""
    assert teacher_key(TINY.replace(model=sm.Model(_init_two_layers, _Opaque())), engine.Task(
        np.zeros((2, 784), np.float32), np.zeros(2, np.int32), np.zeros((2, 784), np.float32), np.zeros(2, np.int32),
        10), seed=0, run_batch=1, n_runs=1, n_devices=1, platform="cpu", device_kind="cpu", learning_rate=3e-4) is None


_SCRIPT = """
import numpy as np, flax.linen as nn, subliminal_mlp as sm
from subliminal_mlp import engine
from subliminal_mlp.core.teacher_cache import key_digest, teacher_key
t = engine.Task(np.zeros((2, 784), np.float32), np.zeros(2, np.int32), np.zeros((2, 784), np.float32),
                np.zeros(2, np.int32), 10)
model = sm.from_flax(nn.Sequential((nn.Dense(8), lambda x: x if x.ndim in {1, 2} else x, nn.Dense(13))))
print(key_digest(teacher_key(sm.Experiment(model=model), t, seed=0, run_batch=1, n_runs=1, n_devices=1,
                             platform="cpu", device_kind="cpu", learning_rate=3e-4)))
"""


def test_a_models_key_is_the_same_in_every_process(tmp_path):
    """The key identifies code by digests that do not depend on the process (no memory addresses, no string
    hashing: a lambda's set constant is ordered by Python's per-process hash seed)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "model.py"
    script.write_text(_SCRIPT)
    keys = {subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed, "JAX_PLATFORMS": "cpu"}).stdout.strip()
            for seed in ("1", "2")}
    assert len(keys) == 1 and len(next(iter(keys))) == 20, keys


def test_a_changed_setting_misses_the_cache(tmp_path):
    cache = TeacherCache(tmp_path, log=lambda s: None)
    key = teacher_key(TINY, engine.Task(np.ones((4, 784), np.float32), np.zeros(4), np.ones((4, 784)), np.zeros(4), 10),
                      seed=0, run_batch=1, n_runs=1, n_devices=1, platform="cpu", device_kind="cpu",
                      learning_rate=3e-4)
    params = _params()
    cache.store(key, __import__("jax").tree.map(lambda a: np.asarray(a)[None], params))
    assert cache.load(key, 1, params) is not None
    assert cache.load({**key, "teacher_epochs": 2}, 1, params) is None
    assert cache.load({**key, "seed": 1}, 1, params) is None
    assert cache.load(key, 2, params) is None  # run 1 was never stored


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty", "other-shape"])
def test_a_damaged_entry_is_recomputed_and_replaced_never_used(tmp_path, damage):
    import jax

    logs = []
    cache = TeacherCache(tmp_path, log=logs.append)
    key = {"any": "key"}
    params = _params()
    stacked = jax.tree.map(lambda a: np.asarray(a)[None], params)
    cache.store(key, stacked)
    path = cache.path(key, 0)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) * 2 // 3])
    elif damage == "flip":
        path.write_bytes(raw[:-100] + bytes([raw[-100] ^ 1]) + raw[-99:])
    elif damage == "header":
        path.write_bytes(b"{not json\n" + raw.partition(b"\n")[2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # an entry of another model under the same name: its leaves do not match
        TeacherCache(tmp_path, log=logs.append).put(key, 0, sm.mlp((8,)).init(engine.run_key(0, 0)))
    with pytest.raises(CorruptEntry):
        cache.read(key, 0, params)
    assert cache.load(key, 1, params) is None  # not used
    assert cache.stats()["corrupt"] == 1 and not path.exists() and "damaged entry" in logs[-1]
    cache.store(key, stacked)  # what engine.run does after training the teachers
    again = cache.load(key, 1, params)
    assert all(np.array_equal(a[0], b) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)))


def _entry_bytes(path):
    """(header dict, payload bytes) of an entry file: a JSON line, then the .npz payload."""
    import json

    head, _, payload = path.read_bytes().partition(b"\n")
    return json.loads(head), payload


def _write_entry(path, header, payload):
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(header).encode() + b"\n" + payload)


def test_read_rejects_an_entry_of_another_run_key_format_or_parameter_names(tmp_path):
    """``read`` checks every header field against what was asked for: an entry that is intact but belongs to
    something else (forged by hand here) is a CorruptEntry, never another run's or another model's teacher."""
    import shutil

    cache = TeacherCache(tmp_path, log=lambda s: None)
    key = {"any": "key"}
    run0 = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)}
    run1 = {"a": np.ones((2, 3), np.float32), "b": np.ones(4, np.float32)}
    cache.put(key, 0, run0)
    cache.put(key, 1, run1)
    p0, p1 = cache.path(key, 0), cache.path(key, 1)
    good0, good1 = p0.read_bytes(), p1.read_bytes()
    np.testing.assert_array_equal(cache.read(key, 0, run0)["a"], run0["a"])  # the entries as written are read

    def rejected(run=0, k=key, like=run0):
        with pytest.raises(CorruptEntry):
            cache.read(k, run, like)
        p0.write_bytes(good0)
        return True

    # run 0's header with run 1's payload of the same length: the checksum, not the length, rejects it
    (h0, pay0), (_, pay1) = _entry_bytes(p0), _entry_bytes(p1)
    assert len(pay0) == len(pay1) and pay0 != pay1
    _write_entry(p0, h0, pay1)
    assert rejected()
    # run 1's entry copied over run 0's (a valid file, of another run)
    shutil.copyfile(p1, p0)
    assert rejected()
    # run 0's entry copied into another key's directory (a valid file, of another key)
    other = {"any": "other key"}
    _write_entry(cache.path(other, 0), h0, pay0)
    assert rejected(k=other)
    # another or no format version
    for version in (0, 2, None):
        _write_entry(p0, {f: v for f, v in {**h0, "format_version": version}.items() if v is not None}, pay0)
        assert rejected()
    # the same shapes and dtypes in the same order under other names: another model's parameters
    assert rejected(like={"c": np.zeros((2, 3), np.float32), "d": np.zeros(4, np.float32)})
    assert rejected(like={"a": {"w": np.zeros((2, 3), np.float32)}, "b": np.zeros(4, np.float32)})
    # a payload whose arrays disagree with its own (intact, checksummed) header: (3, 2) where the header says (2, 3)
    import hashlib
    import io

    buf = io.BytesIO()
    np.savez(buf, np.zeros((3, 2), np.float32), np.zeros(4, np.float32))
    forged = buf.getvalue()
    _write_entry(p0, {**h0, "bytes": len(forged), "sha256": hashlib.sha256(forged).hexdigest()}, forged)
    with pytest.raises(CorruptEntry, match="payload arrays disagree with the header"):
        cache.read(key, 0, run0)
    p0.write_bytes(good0)
    assert cache.read(key, 0, run0)["b"].shape == (4,) and p1.read_bytes() == good1


def test_put_writes_atomically(tmp_path, monkeypatch):
    """A write that fails half-way (a full disk) leaves no partial entry under a final name and the previous
    entry as it was: a reader sees a whole entry or none."""
    from pathlib import Path

    cache = TeacherCache(tmp_path, log=lambda s: None)
    key = {"any": "key"}
    old = {"a": np.zeros((64, 64), np.float32)}
    cache.put(key, 0, old)
    before = cache.path(key, 0).read_bytes()
    real_write_bytes = Path.write_bytes

    def half_then_full_disk(self, data):
        real_write_bytes(self, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full_disk)
    new = {"a": np.ones((64, 64), np.float32)}
    for run in (0, 1):  # over an existing entry, and a new one
        with pytest.raises(OSError):
            cache.put(key, run, new)
    monkeypatch.undo()
    assert cache.path(key, 0).read_bytes() == before
    assert [p.name for p in cache.path(key, 0).parent.glob("run-*")] == ["run-00000.teacher"]
    assert sorted(p.name for p in cache.path(key, 0).parent.iterdir()) == ["key.json", "run-00000.teacher"]
    np.testing.assert_array_equal(cache.read(key, 0, old)["a"], old["a"])


def test_location_follows_the_data_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("SUBLIMINAL_MLP_TEACHERS", raising=False)
    monkeypatch.setenv("SUBLIMINAL_MLP_CACHE", str(tmp_path / "c"))
    assert default_teacher_dir() == tmp_path / "c" / "teachers"
    monkeypatch.delenv("SUBLIMINAL_MLP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_teacher_dir() == tmp_path / "x" / "subliminal_mlp" / "teachers"
    monkeypatch.setenv("SUBLIMINAL_MLP_TEACHERS", str(tmp_path / "t"))
    assert default_teacher_dir() == tmp_path / "t" and TeacherCache().root == tmp_path / "t"
