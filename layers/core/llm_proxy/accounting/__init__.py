"""What each request cost: usage records, daily rollups, dead letters and their replay,
prices, metrics. Imported by the report and replay functions, so nothing here may import
litellm at package level."""
