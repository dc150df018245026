"""tools/bench_vision.py on the tiny preset at two sizes: every run is timed, and the ratios come from
the timings and the files, not from a speed."""

import json

import pytest
import torch

from tools.bench_vision import main, set_threads


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_vision")
    argv = ["--preset", "fastvlm-tiny", "--image-sizes", "128,64", "--repeats", "2", "--calibration-images", "2",
            "--threads", "1", "--cache", str(tmp / "cache"), "--json", str(tmp / "results.json")]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
        yield tmp, argv, json.loads((tmp / "results.json").read_text())
    finally:
        set_threads(threads)  # the process's threadpools, as the rest of the suite had them


@pytest.mark.slow
def test_every_size_and_scheme_is_timed(bench):
    _, _, result = bench
    rows = result["results"]
    assert [(r["image_size"], r["vision_tokens"]) for r in rows] == [(128, 16), (64, 4)]
    assert result["threads"] == 1
    for r in rows:
        for scheme in ("fp32", "int8"):
            t = r["timings"][scheme]
            assert 0 < t["min"] <= t["median"] <= t["max"], (scheme, t)
    assert rows[0]["encoder_flops"] > 3 * rows[1]["encoder_flops"] > 0  # 4x the pixels


@pytest.mark.slow
def test_ratios_come_from_the_timings_and_files(bench):
    _, _, result = bench
    for r in result["results"]:
        t = r["timings"]
        assert r["int8_speedup"] == pytest.approx(t["fp32"]["median"] / t["int8"]["median"])
        assert r["int8_pte_ratio"] == pytest.approx(r["pte_bytes"]["int8"] / r["pte_bytes"]["fp32"])
        assert r["int8_pte_ratio"] < 0.5  # int8 weights: a quarter of fp32 plus scales and graph
        # int8 changes the output but keeps its direction: random weights, calibrated on task images
        assert 0.8 < r["int8_output_cosine"] < 0.99999


@pytest.mark.slow
def test_encoders_are_cached_by_content(bench, capsys):
    tmp, argv, _ = bench
    before = sorted(p.name for p in (tmp / "cache").iterdir())
    assert len(before) == 4  # two sizes, fp32 and int8
    assert main(argv) == 0
    assert "building" not in capsys.readouterr().out
    assert sorted(p.name for p in (tmp / "cache").iterdir()) == before


def test_a_size_the_encoder_cannot_take_is_one_line_exit_2(tmp_path, capsys):
    code = main(["--preset", "fastvlm-tiny", "--image-sizes", "100", "--cache", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "stride" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cache").exists()
