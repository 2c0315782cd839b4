"""Turning finished stage folders into what a person reads: the statistics (`stats`: Wilson
intervals, exact McNemar, bootstrap intervals), the report's data gathered from the run folder
(`results`), its markdown (`markdown`) and its PNG plots (`plots`)."""
