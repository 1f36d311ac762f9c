"""Hinton's omitted digit: students never see a '3' in distillation; the record is consistent."""

import numpy as np
import pytest

from subliminal_mlp.config import Config, ConfigError
from subliminal_mlp.data import load_mnist
from subliminal_mlp.omitted_digit import MODELS, SUBSETS, format_omitted_table, run_omitted_digit, write_omitted


def test_omitted_digit_record_is_consistent_and_students_learn(data_root, tmp_path):
    data = load_mnist(data_root)
    cfg = Config(hidden_widths=(64,), n_runs=2, teacher_epochs=1, student_epochs=2, batch_size=512)
    rec = run_omitted_digit(cfg, data, digit=3)
    labels = np.asarray(data.train_labels)
    assert rec["n_distillation_images"] == int(np.sum(labels != 3)) == 60_000 - 6_131
    test = np.asarray(data.test_labels)
    n3, n_other = int(np.sum(test == 3)), int(np.sum(test != 3))
    for name in MODELS:
        m = rec["models"][name]
        assert list(m) == list(SUBSETS)
        for run in range(2):
            a, a3, ao = (m[s]["accuracies"][run] for s in SUBSETS)
            # The overall accuracy is the count-weighted mix of the two subsets: an independent check.
            assert a == pytest.approx((n3 * a3 + n_other * ao) / (n3 + n_other), abs=1e-5)
    assert min(rec["models"]["teacher"]["all_digits"]["accuracies"]) > 0.85
    for student in ("student_same_init", "student_other_init"):
        assert min(rec["models"][student]["other_digits"]["accuracies"]) > 0.7
    assert "digit 3" in format_omitted_table(rec)
    files = write_omitted(rec, tmp_path)
    assert files["png"].stat().st_size > 10_000 and len(files["csv"].read_text().splitlines()) == 1 + 3 * 3 * 2
    with pytest.raises(ConfigError, match="digit = 10"):
        run_omitted_digit(cfg, data, digit=10)
