"""``neurosmk-stats`` user errors (issue #15): every one ends in a one-line message and a known
exit code (2: the command line is wrong, checked before anything is parsed or written; 1: an
input file or subject folder is bad), never a traceback, and the output folder never mixes two
runs. Real FreeSurfer stats from demo/freesurfer (see its PROVENANCE.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from neurosmk.fsstats.cli import SKIPPED_COLUMNS, main, scan_paths

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "demo" / "freesurfer"


def cli(capsys, *args) -> tuple[int, str, str]:
    """main() in this process: a traceback would be an exception raised here (test error)."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def error_line(err: str) -> str:
    """The message of a failed run: exactly one line, starting with the program name."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("neurosmk-stats: error: ") and "Traceback" not in err, err
    return lines[0]


def snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file()}


def subject(dst: Path, src: str = "Subj001") -> Path:
    shutil.copytree(FIX / src, dst)
    return dst


def test_same_subject_in_two_paths_is_refused_before_anything_is_written(tmp_path, capsys):
    a, b = tmp_path / "site_a", tmp_path / "site_b"
    subject(a / "Subj001")
    subject(a / "sub-01_ses-A", "ds000005_sub-01")
    subject(b / "Subj001")
    out = tmp_path / "out"
    rc, _, err = cli(capsys, a, b, "-o", out)
    msg = error_line(err)
    assert rc == 2 and "subject Subj001 found twice" in msg
    assert str(a / "Subj001") in msg and str(b / "Subj001") in msg
    assert not out.exists()
    # one folder given twice (a SUBJECTS_DIR and one of its subjects); with --skip-bad too, and
    # tables of an earlier run stay as they were
    assert cli(capsys, a, "-o", out)[0] == 0
    before = snapshot(out)
    rc, _, err = cli(capsys, a, a / "sub-01_ses-A", "-o", out, "--skip-bad")
    msg = error_line(err)
    assert rc == 2 and "subject sub-01 session ses-A given twice" in msg
    assert snapshot(out) == before


def test_same_subject_twice_through_the_console_script_has_no_traceback(tmp_path):
    """The reported case end to end: it crashed with a traceback after writing doubled tables."""
    a, b = tmp_path / "a", tmp_path / "b"
    subject(a / "Subj001")
    subject(b / "Subj001")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run([sys.executable, "-m", "neurosmk.fsstats.cli", str(a), str(b), "-o",
                        str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert error_line(r.stderr).endswith(f"found twice: {a / 'Subj001'} and {b / 'Subj001'}; "
                                         "give each subject once")
    assert not (tmp_path / "out").exists()


def test_no_stale_manifest_or_tables_from_an_earlier_run(tmp_path, capsys):
    sd = tmp_path / "subjects"
    subject(sd / "Subj001")
    subject(sd / "sub-01", "ds000005_sub-01")
    bad = sd / "Subj001" / "stats" / "lh.aparc.stats"
    lines = bad.read_text().splitlines(keepends=True)
    row = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    lines[row] = lines[row].rstrip("\n") + " 42\n"  # one column too many
    bad.write_text("".join(lines))
    out = tmp_path / "out"
    rc, _, err = cli(capsys, sd, "-o", out, "--skip-bad")
    assert rc == 0 and "skipped 1 bad file" in err
    man = pd.read_csv(out / "skipped_files.tsv", sep="\t")
    assert man.file.tolist() == [str(bad)] and man.kind.tolist() == ["parse-error"]
    wide_first = {p.name for p in (out / "wide").glob("*.tsv")}
    assert "BA_exvivo_lh_thickness.tsv" in wide_first and (out / "freesurfer_stats_long.tsv").exists()

    # the file repaired, one subject only, Parquet-only long table: nothing of run 1 remains
    shutil.copy(FIX / "Subj001" / "stats" / "lh.aparc.stats", bad)
    rc, _, err = cli(capsys, sd, "-o", out, "--subjects", "Subj001", "--no-long-tsv")
    assert rc == 0 and err == "", err
    man = pd.read_csv(out / "skipped_files.tsv", sep="\t")
    assert list(man.columns) == SKIPPED_COLUMNS and len(man) == 0  # rewritten: nothing skipped
    assert not (out / "freesurfer_stats_long.tsv").exists()  # would be run 1's, both subjects
    assert set(pd.read_parquet(out / "freesurfer_stats_long.parquet").participant_id) == {"sub-Subj001"}
    wide_second = {p.name for p in (out / "wide").glob("*.tsv")}
    assert wide_second == {n for n in wide_first if n.startswith(("aparc_lh_", "wmparc_"))}
    for p in (out / "wide").glob("*.tsv"):
        assert pd.read_csv(p, sep="\t").participant_id.tolist() == ["sub-Subj001"], p
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files


@pytest.mark.parametrize("where", ["file", "below_a_file"])
def test_output_dir_that_is_a_file(tmp_path, capsys, where):
    f = tmp_path / "tables.tsv"
    f.write_text("keep me\n")
    out = f if where == "file" else f / "sub"
    rc, _, err = cli(capsys, FIX / "Subj001", "--output-dir", out)
    msg = error_line(err)
    assert rc == 2 and f"--output-dir {out}:" in msg and "not a directory" in msg
    assert f.read_text() == "keep me\n"


def test_subject_folder_without_stats_is_named(tmp_path, capsys):
    sd = tmp_path / "subjects"
    subject(sd / "Subj001")
    for d in ("sub-02/mri", "sub-02/scripts", "fsaverage/surf", "fsaverage/label", "notes"):
        (sd / d).mkdir(parents=True)  # a failed recon-all, FreeSurfer's template, another folder
    out = tmp_path / "out"
    rc, _, err = cli(capsys, sd, "-o", out)
    msg = error_line(err)
    assert rc == 1 and msg.startswith(f"neurosmk-stats: error: {sd / 'sub-02'}: ") and "stats/" in msg
    assert "--skip-bad" in msg and "fsaverage" not in msg and not out.exists()
    # named directly, too
    rc, _, err = cli(capsys, sd / "sub-02", "-o", out)
    assert rc == 1 and str(sd / "sub-02") in error_line(err)

    rc, _, err = cli(capsys, sd, "-o", out, "--skip-bad")
    assert rc == 0 and f"skipped 1 subject folder(s) without stats/ ({sd / 'sub-02'})" in err
    man = pd.read_csv(out / "skipped_files.tsv", sep="\t")
    assert man.file.tolist() == [str(sd / "sub-02")] and man.kind.tolist() == ["no-stats-dir"]
    assert set(pd.read_parquet(out / "freesurfer_stats_long.parquet").participant_id) == {"sub-Subj001"}
    # --subjects leaves the other folders alone; the output folder inside the SUBJECTS_DIR is not
    # taken for a subject on the next run
    rc, _, err = cli(capsys, sd, "-o", sd / "tables", "--subjects", "Subj001")
    assert rc == 0 and err == ""
    assert scan_paths([sd], exclude=[sd / "tables"]) == ([sd / "Subj001"], [sd / "sub-02"])


@pytest.mark.parametrize("args, words", [
    (["{tmp}/nowhere", "-o", "{tmp}/o"], ["{tmp}/nowhere: no such directory"]),
    (["{fix}/PROVENANCE.md", "-o", "{tmp}/o"], ["{fix}/PROVENANCE.md: not a directory"]),
    (["{fix}", "-o", "{tmp}/o", "--subjects", "Subj001", "Subj999"], ["--subjects: Subj999 not found"]),
    (["{fix}", "-o", "{tmp}/o", "--jobs", "0"], ["--jobs", "'0'"]),
    (["{fix}", "-o", "{tmp}/o", "--jobs", "two"], ["--jobs", "'two'"]),
    (["{fix}"], ["--output-dir"]),
])
def test_command_line_errors_exit_2_without_writing(tmp_path, capsys, args, words):
    args = [a.format(tmp=tmp_path, fix=FIX) for a in args]
    rc, out, err = cli(capsys, *args)
    assert rc == 2 and out == "" and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # argparse prints its usage lines first
    assert last.startswith("neurosmk-stats: error: "), err
    for w in words:
        assert w.format(tmp=tmp_path, fix=FIX) in last, err
    assert not (tmp_path / "o").exists()


def test_unwritable_output_is_an_error_not_a_traceback(tmp_path, capsys, monkeypatch):
    """A write that fails (disk full, permissions) ends in one line naming the folder."""
    import neurosmk.fsstats.tables as tables_mod

    def full(path, df):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(tables_mod, "write_long_tsv", full)  # the one writer's TSV call
    out = tmp_path / "out"
    rc, _, err = cli(capsys, FIX / "Subj001", "-o", out)
    msg = error_line(err)
    assert rc == 1 and f"cannot write the tables to {out}" in msg and "No space left" in msg
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files
