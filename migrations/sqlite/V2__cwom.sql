-- CWOM v0.1 (../shared/CWOM.md): a table per kind, join tables for the Ref lists that are
-- queried, foreign keys for every stored Ref. Nested value objects are JSON text checked by
-- json_valid; times are UTC text in the tasks table's fixed-width form
-- (YYYY-MM-DDTHH:MM:SS.ffffffZ), so text order is time order. Ids are UUID v7 text made by
-- the daemon (time-ordered: "ORDER BY id" is creation order).
-- Foreign keys hold on connections with PRAGMA foreign_keys=ON (the daemon's always is).

CREATE TABLE cwom_repos (
    id             TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 128),
    name           TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    slug           TEXT NOT NULL UNIQUE CHECK (length(slug) BETWEEN 1 AND 256),
    source         TEXT NOT NULL CHECK (json_valid(source)),
    default_branch TEXT NOT NULL DEFAULT 'main',
    visibility     TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('public', 'private', 'internal')),
    owners         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(owners)),
    policy         TEXT CHECK (policy IS NULL OR json_valid(policy)),
    links          TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(links)),
    tags           TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    meta           TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX cwom_repos_visibility_idx ON cwom_repos (visibility, id);

CREATE TABLE cwom_constraint_snapshots (
    id          TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 128),
    scope       TEXT NOT NULL CHECK (scope IN ('personal', 'repo', 'org', 'system', 'run')),
    owner       TEXT NOT NULL CHECK (json_valid(owner)),
    constraints TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(constraints)),
    tags        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    meta        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
    captured_at TEXT NOT NULL
);

CREATE TABLE cwom_doctrine_refs (
    id            TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 128),
    namespace     TEXT NOT NULL CHECK (length(namespace) BETWEEN 1 AND 128),
    name          TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    version       TEXT NOT NULL CHECK (length(version) BETWEEN 1 AND 64),
    type          TEXT NOT NULL CHECK (type IN ('principle', 'policy', 'procedure', 'heuristic', 'pattern')),
    priority      TEXT NOT NULL DEFAULT 'should' CHECK (priority IN ('must', 'should', 'may')),
    statement     TEXT NOT NULL CHECK (length(statement) BETWEEN 1 AND 4000),
    rationale     TEXT,
    links         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(links)),
    applicability TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(applicability)),
    tags          TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    meta          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    -- Also serves the namespace filter (its leading column).
    UNIQUE (namespace, name, version)
);
CREATE INDEX cwom_doctrine_refs_type_idx ON cwom_doctrine_refs (type, id);

CREATE TABLE cwom_issues (
    id            TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 128),
    repo_id       TEXT NOT NULL REFERENCES cwom_repos (id),
    repo_role     TEXT,
    title         TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 512),
    description   TEXT NOT NULL DEFAULT '',
    type          TEXT NOT NULL CHECK (type IN ('feature', 'bug', 'chore', 'research', 'ops', 'doc', 'incident')),
    priority      TEXT NOT NULL DEFAULT 'P2' CHECK (priority IN ('P0', 'P1', 'P2', 'P3', 'P4')),
    status        TEXT NOT NULL DEFAULT 'planned'
                      CHECK (status IN ('planned', 'ready', 'running', 'blocked', 'done', 'failed', 'canceled')),
    assignees     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(assignees)),
    watchers      TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(watchers)),
    acceptance    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(acceptance)),
    -- Issue-to-Issue links (parent, blocks…): checked to resolve on write, not queried.
    relationships TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(relationships)),
    tags          TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    meta          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX cwom_issues_repo_idx ON cwom_issues (repo_id, id);
CREATE INDEX cwom_issues_status_idx ON cwom_issues (status, id);
CREATE INDEX cwom_issues_type_idx ON cwom_issues (type, id);
CREATE INDEX cwom_issues_priority_idx ON cwom_issues (priority, id);

CREATE TABLE cwom_context_packets (
    id                       TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 128),
    issue_id                 TEXT NOT NULL REFERENCES cwom_issues (id),
    issue_role               TEXT,
    version                  TEXT NOT NULL CHECK (length(version) BETWEEN 1 AND 64),
    summary                  TEXT NOT NULL CHECK (length(summary) BETWEEN 1 AND 4000),
    inputs                   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(inputs)),
    assumptions              TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(assumptions)),
    open_questions           TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(open_questions)),
    instructions             TEXT NOT NULL DEFAULT '',
    constraint_snapshot_id   TEXT REFERENCES cwom_constraint_snapshots (id),
    constraint_snapshot_role TEXT,
    tags                     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    meta                     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
    created_at               TEXT NOT NULL,
    updated_at               TEXT NOT NULL
);
CREATE INDEX cwom_context_packets_issue_idx ON cwom_context_packets (issue_id, id);

CREATE TABLE cwom_runs (
    id                       TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 128),
    issue_id                 TEXT NOT NULL REFERENCES cwom_issues (id),
    issue_role               TEXT,
    repo_id                  TEXT NOT NULL REFERENCES cwom_repos (id),
    repo_role                TEXT,
    status                   TEXT NOT NULL DEFAULT 'planned'
                                 CHECK (status IN ('planned', 'ready', 'running', 'blocked', 'done', 'failed', 'canceled')),
    mode                     TEXT NOT NULL CHECK (mode IN ('human', 'agent', 'hybrid', 'system')),
    executor                 TEXT NOT NULL CHECK (json_valid(executor)),
    -- inputs.constraint_snapshot, pinned at start.
    constraint_snapshot_id   TEXT REFERENCES cwom_constraint_snapshots (id),
    constraint_snapshot_role TEXT,
    plan                     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(plan)),
    telemetry                TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(telemetry)),
    cost                     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(cost)),
    -- outputs: result_summary and decision_log here; artifacts are the cwom_artifacts rows.
    result_summary           TEXT,
    decision_log             TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(decision_log)),
    failure                  TEXT CHECK (failure IS NULL OR json_valid(failure)),
    tags                     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    meta                     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
    created_at               TEXT NOT NULL,
    updated_at               TEXT NOT NULL
);
-- Also serves Issue.runs.
CREATE INDEX cwom_runs_issue_idx ON cwom_runs (issue_id, id);
CREATE INDEX cwom_runs_repo_idx ON cwom_runs (repo_id, id);
CREATE INDEX cwom_runs_status_idx ON cwom_runs (status, id);
CREATE INDEX cwom_runs_mode_idx ON cwom_runs (mode, id);

CREATE TABLE cwom_artifacts (
    id           TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 128),
    run_id       TEXT NOT NULL REFERENCES cwom_runs (id),
    run_role     TEXT,
    issue_id     TEXT NOT NULL REFERENCES cwom_issues (id),
    issue_role   TEXT,
    type         TEXT NOT NULL CHECK (type IN ('code_patch', 'commit', 'pr', 'build', 'container_image', 'doc',
                                               'report', 'dataset', 'log', 'trace', 'binary', 'link')),
    title        TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 512),
    uri          TEXT NOT NULL CHECK (length(uri) BETWEEN 1 AND 2000),
    digest       TEXT,
    media_type   TEXT,
    size_bytes   INTEGER CHECK (size_bytes IS NULL OR size_bytes >= 0),
    preview      TEXT CHECK (preview IS NULL OR length(preview) <= 4000),
    verification TEXT NOT NULL DEFAULT '{"status":"unverified","checks":[]}' CHECK (json_valid(verification)),
    tags         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    meta         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
-- Also serves Run.outputs.artifacts.
CREATE INDEX cwom_artifacts_run_idx ON cwom_artifacts (run_id, id);
CREATE INDEX cwom_artifacts_issue_idx ON cwom_artifacts (issue_id, id);
CREATE INDEX cwom_artifacts_type_idx ON cwom_artifacts (type, id);

-- Ref lists: one row per link, in list order (position), with the Ref's role. The primary
-- key makes a list a set; the second index answers "who links to this?".

CREATE TABLE cwom_issue_context_packets (
    issue_id  TEXT NOT NULL REFERENCES cwom_issues (id),
    packet_id TEXT NOT NULL REFERENCES cwom_context_packets (id),
    role      TEXT,
    position  INTEGER NOT NULL,
    PRIMARY KEY (issue_id, packet_id)
);
CREATE INDEX cwom_issue_context_packets_packet_idx ON cwom_issue_context_packets (packet_id);

CREATE TABLE cwom_issue_doctrine_refs (
    issue_id    TEXT NOT NULL REFERENCES cwom_issues (id),
    doctrine_id TEXT NOT NULL REFERENCES cwom_doctrine_refs (id),
    role        TEXT,
    position    INTEGER NOT NULL,
    PRIMARY KEY (issue_id, doctrine_id)
);
CREATE INDEX cwom_issue_doctrine_refs_doctrine_idx ON cwom_issue_doctrine_refs (doctrine_id);

CREATE TABLE cwom_issue_constraints (
    issue_id    TEXT NOT NULL REFERENCES cwom_issues (id),
    snapshot_id TEXT NOT NULL REFERENCES cwom_constraint_snapshots (id),
    role        TEXT,
    position    INTEGER NOT NULL,
    PRIMARY KEY (issue_id, snapshot_id)
);
CREATE INDEX cwom_issue_constraints_snapshot_idx ON cwom_issue_constraints (snapshot_id);

CREATE TABLE cwom_run_context_packets (
    run_id    TEXT NOT NULL REFERENCES cwom_runs (id),
    packet_id TEXT NOT NULL REFERENCES cwom_context_packets (id),
    role      TEXT,
    position  INTEGER NOT NULL,
    PRIMARY KEY (run_id, packet_id)
);
CREATE INDEX cwom_run_context_packets_packet_idx ON cwom_run_context_packets (packet_id);

CREATE TABLE cwom_run_doctrine_refs (
    run_id      TEXT NOT NULL REFERENCES cwom_runs (id),
    doctrine_id TEXT NOT NULL REFERENCES cwom_doctrine_refs (id),
    role        TEXT,
    position    INTEGER NOT NULL,
    PRIMARY KEY (run_id, doctrine_id)
);
CREATE INDEX cwom_run_doctrine_refs_doctrine_idx ON cwom_run_doctrine_refs (doctrine_id);

CREATE TABLE cwom_packet_doctrine_refs (
    packet_id   TEXT NOT NULL REFERENCES cwom_context_packets (id),
    doctrine_id TEXT NOT NULL REFERENCES cwom_doctrine_refs (id),
    role        TEXT,
    position    INTEGER NOT NULL,
    PRIMARY KEY (packet_id, doctrine_id)
);
CREATE INDEX cwom_packet_doctrine_refs_doctrine_idx ON cwom_packet_doctrine_refs (doctrine_id);
