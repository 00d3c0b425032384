"""FreeSurfer ``*.stats`` parsing and group aggregation (long, global and wide tables)."""

from neurosmk.fsstats.parser import NotATableError, ParsedStats, StatsParseError, parse_stats_file

__all__ = ["NotATableError", "ParsedStats", "StatsParseError", "parse_stats_file"]
