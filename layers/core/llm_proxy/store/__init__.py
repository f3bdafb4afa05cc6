"""Every DynamoDB table the gateway reads and writes, one class per table, all behind one small
base (`base.Table`) with one rule for a table that is not configured, and one module for
DynamoDB value conversion (`values`). The domain types stay with their parts (access,
accounting, pipeline); nothing here imports litellm or FastAPI at module level."""
