"""Who may call and how much: the master key, virtual keys, rate limits and budgets."""
