#!/bin/sh
# Starts the change pipeline of workflow.json: an agent changes REPO, the tests run on
# exactly its commit, a person approves (POST /tasks/{id}/decision, or the dashboard's
# Approve button), and the agent's branch is pushed to REMOTE.
#
#   REPO=/srv/git/app REMOTE=/srv/git/app.git PROFILE=claude TEST_COMMAND="make test" ./run.sh
#
# (TEST_COMMAND goes into a JSON string as it is: no double quotes or backslashes in it.)
#
# The daemon needs JCT_ALLOWED_REPO_PREFIXES covering REPO and REMOTE, and sh on
# JCT_COMMAND_ALLOW; JCT_URL and JCT_API_KEY say where it is.
set -eu
here=$(dirname "$0")
url=${JCT_URL:-http://localhost:8000}
: "${REPO:?}" "${REMOTE:?}"
body=$(sed -e "s|@REPO@|$REPO|g" -e "s|@REMOTE@|$REMOTE|g" \
           -e "s|@PROFILE@|${PROFILE:-claude}|g" -e "s|@TEST_COMMAND@|${TEST_COMMAND:-make test}|g" \
           "$here/workflow.json")
curl -sf -X POST "$url/workflows" -H 'Content-Type: application/json' \
     ${JCT_API_KEY:+-H "Authorization: Bearer $JCT_API_KEY"} -d "$body"
echo
