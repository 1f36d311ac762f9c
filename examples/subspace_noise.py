"""Does subliminal learning survive when the noise spans only a random k-dimensional subspace?

Figure 10 (784-256-256-10+3 ReLU MLP, 5 + 5 epochs, 60,000 noise images per run), but each noise
image is uniform noise projected onto a random k-dimensional subspace of the 784 pixels (a new
subspace per run, rescaled to keep its power). Shared vs cross-model students, N runs, 95 % CIs.
Flags: --k (30; 784 = all pixels), --runs (10; the paper: 100), --epochs (5), --n-noise (60000),
--hidden (256), --seed (0), --data-dir (default: $SUBLIMINAL_MLP_DATA, the
user cache, a download), --out (results/examples).

    python examples/subspace_noise.py --runs 4 --epochs 2 --k 10
"""
import argparse

import subliminal_mlp as sm

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
for flag, default in {"--k": 30, "--runs": 10, "--epochs": 5, "--n-noise": 60_000, "--hidden": 256, "--seed": 0,
                      "--data-dir": "", "--out": "results/examples"}.items():
    p.add_argument(flag, type=type(default), default=default)
a = p.parse_args()
sm.check_output(a.out)  # where the records go, checked before any compute (sm.OutputError)

exp = sm.Experiment(model=sm.mlp((a.hidden, a.hidden)), inputs=sm.inputs.subspace(a.k, sm.inputs.uniform(a.n_noise)),
                    teacher_epochs=a.epochs, student_epochs=a.epochs, batch_size=min(1024, a.n_noise),
                    name=f"subspace_noise_k{a.k}")
task = sm.Task.from_dataset(sm.load_mnist(a.data_dir or None))
result = sm.run(exp, task, n_runs=a.runs, seed=a.seed, progress=True)
print(result.table())
gap, ci = sm.mean_ci95(result.accuracy("student_aux") - result.accuracy("cross_aux"))
print(f"student_aux - cross_aux, paired by run: {gap:+.4f} ± {sm.format_ci(ci)}")
print("record:", result.write(a.out, exp.name)["json"])
