"""Do subliminal learning and the theorem's first-order alignment hold beyond the paper's ReLU MLP?

A tanh MLP 784-256-256-10+3 and a small CNN (Flax, through `from_flax`) through Figure 10's protocol, and the theorem
(protocol.md §2) at each run's init, ε = 1e-3: ΔθT = -∇ class CE on 256 digits, student CE on the aux logits of 256
noise images. Shared init: ΔθS·ΔθT = εA + O(ε²), A ≥ 0; fresh init: D0 + εA' + O(ε²), no sign (the record's metric
"theorem"). Flags: --runs (10; the paper: 100), --epochs (5), --n-noise (60000), --hidden (256), --channels (16),
--seed (0), --data-dir (default: the loader's search), --out (results/examples). The CNN, ~35 min on 2 CPU cores:
    python examples/other_architectures.py --runs 4 --epochs 2 --channels 8"""
import argparse

import flax.linen as nn, jax  # noqa: E401
import subliminal_mlp as sm

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
for flag, default in {"--runs": 10, "--epochs": 5, "--n-noise": 60_000, "--hidden": 256, "--channels": 16,
                      "--seed": 0, "--data-dir": "", "--out": "results/examples"}.items():
    p.add_argument(flag, type=type(default), default=default)
a = p.parse_args()
sm.check_output(a.out)  # where the records go, checked before any compute (sm.OutputError)


def theorem(m, eps=1e-3, t=sm.theory):  # [A, D0, A'] at the run's θ0 (shared) and at a fresh init (other)
    x, other = jax.random.uniform(m.keys["held_out_noise"], (256, 784), minval=-1), m.model.init(m.keys["fresh"])
    r = t.sweep([t.ce_aux(m.model)], t.class_cross_entropy_loss(m.model), m.reference, [m.reference, other], x,
                [eps], loss_T_args=(m.data["train_x"][:256], m.data["train_y"][:256]), model=m.model)
    return jax.numpy.stack([r.A[0], r.dot0[1, 0], (r.dot[1, 0, 0] - r.dot0[1, 0]) / eps])


cnn = nn.Sequential((lambda x: x.reshape(-1, 28, 28, 1), nn.Conv(a.channels, (3, 3), strides=2), nn.relu,
                     nn.Conv(2 * a.channels, (3, 3), strides=2), nn.relu, jax.vmap(jax.numpy.ravel), nn.Dense(13)))
task = sm.Task.from_dataset(sm.load_mnist(a.data_dir or None))
for name, model in (("tanh_mlp", sm.mlp((a.hidden, a.hidden), activation="tanh")), ("cnn", sm.from_flax(cnn))):
    exp = sm.Experiment(model=model, inputs=sm.inputs.uniform(a.n_noise), teacher_epochs=a.epochs, name=name,
                        student_epochs=a.epochs, batch_size=min(1024, a.n_noise), metrics={"theorem": theorem})
    result = sm.run(exp, task, n_runs=a.runs, seed=a.seed, progress=True)
    print(f"\n{name} (record: {result.write(a.out, 'other_architectures_' + name)['json']})\n{result.table()}")
    for label, v in zip(("A  (shared)", "D0 (other)", "A' (other)"), result.metrics["theorem"][0].T):
        mean, ci = sm.mean_ci95(v)
        print(f"theorem {label:<11} {mean:+.3e} ± {sm.format_ci(ci, spec='.1e')}   ({sum(v > 0)}/{len(v)} runs > 0)")
