"""Does subliminal learning work for a teacher that knows only digits 0-4?

Figure 10's protocol (ReLU MLP 784-256-256-5+3, 5 + 5 epochs, 60,000 uniform noise images per run)
on the 5-class task of MNIST digits 0-4 (the other digits removed from the training and test sets;
chance = 20 %). Shared vs cross-model students, N runs, 95 % CIs.
Flags: --classes (5: digits 0 .. classes-1), --runs (10; the paper: 100), --epochs (5),
--n-noise (60000), --hidden (256), --seed (0), --data-dir (default: $SUBLIMINAL_MLP_DATA, the
user cache, a download), --out (results/examples).

    python examples/five_class_teacher.py --runs 4 --epochs 2
"""
import argparse

import subliminal_mlp as sm

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
for flag, default in {"--classes": 5, "--runs": 10, "--epochs": 5, "--n-noise": 60_000, "--hidden": 256,
                      "--seed": 0, "--data-dir": "", "--out": "results/examples"}.items():
    p.add_argument(flag, type=type(default), default=default)
a = p.parse_args()
sm.check_output(a.out)  # where the records go, checked before any compute (sm.OutputError)

task = sm.Task.from_dataset(sm.load_mnist(a.data_dir or None), classes=range(a.classes))
exp = sm.Experiment(model=sm.mlp((a.hidden, a.hidden), n_classes=a.classes), inputs=sm.inputs.uniform(a.n_noise),
                    teacher_epochs=a.epochs, student_epochs=a.epochs, batch_size=min(1024, a.n_noise),
                    name=f"teacher_digits_0-{a.classes - 1}")
result = sm.run(exp, task, n_runs=a.runs, seed=a.seed, progress=True)
print(result.table())
gap, ci = sm.mean_ci95(result.accuracy("student_aux") - result.accuracy("cross_aux"))
print(f"student_aux - cross_aux, paired by run: {gap:+.4f} ± {sm.format_ci(ci)}   (chance: {1 / a.classes:.2f})")
print("record:", result.write(a.out, exp.name)["json"])
