"""benchmarks/encoder_spaces.py: the fixed dev rule for VISLEX_ENCODER_CSLS_KNN, and the K rows are measured with."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from encoder_spaces import choose_encoder_csls_knn, served_knn  # noqa: E402


def _rows(p1_5: list[float], echo_5: list[float]) -> list[dict]:
    rows = []
    for i, (p, e) in enumerate(zip(p1_5, echo_5)):
        rows.append({"variant": "default, VISLEX_ENCODER_CSLS_KNN=10", "pair": f"p{i}", "dev_n": 100,
                     "dev_p1_csls": 60.0, "dev_echo": 2.0})
        rows.append({"variant": "default, VISLEX_ENCODER_CSLS_KNN=5", "pair": f"p{i}", "dev_n": 100,
                     "dev_p1_csls": p, "dev_echo": e})
    return rows


def test_rule_switches_only_past_both_margins():
    assert choose_encoder_csls_knn(_rows([60.4, 60.2], [2.0, 2.2]))["encoder_csls_knn"] == 5  # +0.3, echo +0.1
    assert choose_encoder_csls_knn(_rows([60.4, 60.1], [2.0, 2.0]))["encoder_csls_knn"] == 10  # +0.25 only
    assert choose_encoder_csls_knn(_rows([62.0, 62.0], [2.4, 2.4]))["encoder_csls_knn"] == 10  # echo +0.4
    assert choose_encoder_csls_knn([]) == {}


def test_rows_use_the_servers_k(tmp_path):
    from app.settings import Settings

    s = Settings(data_dir=tmp_path, csls_knn=10, encoder_csls_knn=3)
    assert served_knn(s, "use-multilingual") == 3
