"""Does the student need many distinct noise images, or do 2,048 suffice at the paper's step budget?

Figure 10 (784-256-256-10+3 ReLU MLP, 5 + 5 epochs), but the 60,000 noise positions of each epoch
cycle through only 2,048 distinct uniform-noise images: the student takes the paper's number of
optimiser steps on far fewer images. Shared vs cross-model students, N runs, 95 % CIs.
Flags: --distinct (2048; <= --n-noise), --runs (10; the paper: 100), --epochs (5),
--n-noise (60000 positions: the step budget), --hidden (256), --seed (0), --data-dir (default:
$SUBLIMINAL_MLP_DATA, the user cache, a download), --out (results/examples).

    python examples/distinct_images.py --runs 4 --epochs 2 --distinct 256
"""
import argparse

import subliminal_mlp as sm

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
for flag, default in {"--distinct": 2048, "--runs": 10, "--epochs": 5, "--n-noise": 60_000, "--hidden": 256,
                      "--seed": 0, "--data-dir": "", "--out": "results/examples"}.items():
    p.add_argument(flag, type=type(default), default=default)
a = p.parse_args()
sm.check_output(a.out)  # where the records go, checked before any compute (sm.OutputError)

noise = sm.inputs.cycled(sm.inputs.uniform(a.n_noise), a.distinct)
exp = sm.Experiment(model=sm.mlp((a.hidden, a.hidden)), inputs=noise, teacher_epochs=a.epochs,
                    student_epochs=a.epochs, batch_size=min(1024, a.n_noise), name=f"distinct_images_{a.distinct}")
task = sm.Task.from_dataset(sm.load_mnist(a.data_dir or None))
result = sm.run(exp, task, n_runs=a.runs, seed=a.seed, progress=True)
print(result.table())
gap, ci = sm.mean_ci95(result.accuracy("student_aux") - result.accuracy("cross_aux"))
print(f"student_aux - cross_aux, paired by run: {gap:+.4f} ± {sm.format_ci(ci)}")
print("record:", result.write(a.out, exp.name)["json"])
