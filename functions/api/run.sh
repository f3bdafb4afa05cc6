#!/bin/sh
# The streaming function's start command. Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap)
# runs it, waits for the app on $PORT and relays each invocation to it as HTTP, streaming the
# response back (AWS_LWA_INVOKE_MODE=response_stream). Same app as the Mangum handler.
exec python3 -m uvicorn app:app \
  --app-dir "${LAMBDA_TASK_ROOT:-$(dirname "$0")}" \
  --host 127.0.0.1 --port "${PORT:-8080}" \
  --no-access-log --lifespan off --timeout-keep-alive 60
