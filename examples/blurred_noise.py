"""Does subliminal learning survive when the noise is spatially blurred (smooth, image-like noise)?

Figure 10 (784-256-256-10+3 ReLU MLP, 5 + 5 epochs, 60,000 noise images per run), but each noise
image is uniform noise blurred by a Gaussian of width sigma pixels (the blur keeps each pixel's
variance; sigma = 0 is the paper's noise). Shared vs cross-model students, N runs, 95 % CIs.
Flags: --sigma (1.0 pixel), --runs (10; the paper: 100), --epochs (5), --n-noise (60000),
--hidden (256), --seed (0), --data-dir (default: $SUBLIMINAL_MLP_DATA, the
user cache, a download), --out (results/examples).

    python examples/blurred_noise.py --runs 4 --epochs 2 --sigma 2
"""
import argparse

import subliminal_mlp as sm

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
for flag, default in {"--sigma": 1.0, "--runs": 10, "--epochs": 5, "--n-noise": 60_000, "--hidden": 256, "--seed": 0,
                      "--data-dir": "", "--out": "results/examples"}.items():
    p.add_argument(flag, type=type(default), default=default)
a = p.parse_args()
sm.check_output(a.out)  # where the records go, checked before any compute (sm.OutputError)

exp = sm.Experiment(model=sm.mlp((a.hidden, a.hidden)), inputs=sm.inputs.blurred(a.sigma, sm.inputs.uniform(a.n_noise)),
                    teacher_epochs=a.epochs, student_epochs=a.epochs, batch_size=min(1024, a.n_noise),
                    name=f"blurred_noise_sigma{a.sigma:g}")
task = sm.Task.from_dataset(sm.load_mnist(a.data_dir or None))
result = sm.run(exp, task, n_runs=a.runs, seed=a.seed, progress=True)
print(result.table())
gap, ci = sm.mean_ci95(result.accuracy("student_aux") - result.accuracy("cross_aux"))
print(f"student_aux - cross_aux, paired by run: {gap:+.4f} ± {sm.format_ci(ci)}")
print("record:", result.write(a.out, exp.name)["json"])
