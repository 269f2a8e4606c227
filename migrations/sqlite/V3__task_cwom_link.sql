-- A task may name the CWOM Issue its execution is recorded under (a Run per attempt).
ALTER TABLE tasks ADD COLUMN cwom_issue_id TEXT REFERENCES cwom_issues (id);
CREATE INDEX tasks_cwom_issue_idx ON tasks (cwom_issue_id) WHERE cwom_issue_id IS NOT NULL;
