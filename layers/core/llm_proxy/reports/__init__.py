"""The cost report: built from daily rollups, rendered (JSON, CSV, text, HTML), published."""
