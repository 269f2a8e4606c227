-- CWOM v0.1 (../shared/CWOM.md): a table per kind, join tables for the Ref lists that are
-- queried, foreign keys for every stored Ref. Nested value objects are jsonb. Ids are UUID v7
-- text made by the daemon (time-ordered: "ORDER BY id" is creation order); text, not uuid,
-- because a Ref's id is any string of 1 to 128 characters.

CREATE TABLE cwom_repos (
    id             text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    slug           text NOT NULL UNIQUE CHECK (length(slug) BETWEEN 1 AND 256),
    source         jsonb NOT NULL,
    default_branch text NOT NULL DEFAULT 'main',
    visibility     text NOT NULL DEFAULT 'private' CHECK (visibility IN ('public', 'private', 'internal')),
    owners         jsonb NOT NULL DEFAULT '[]',
    policy         jsonb,
    links          jsonb NOT NULL DEFAULT '[]',
    tags           jsonb NOT NULL DEFAULT '[]',
    meta           jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX cwom_repos_visibility_idx ON cwom_repos (visibility, id);

CREATE TABLE cwom_constraint_snapshots (
    id          text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    scope       text NOT NULL CHECK (scope IN ('personal', 'repo', 'org', 'system', 'run')),
    owner       jsonb NOT NULL,
    constraints jsonb NOT NULL DEFAULT '{}',
    tags        jsonb NOT NULL DEFAULT '[]',
    meta        jsonb NOT NULL DEFAULT '{}',
    captured_at timestamptz NOT NULL
);

CREATE TABLE cwom_doctrine_refs (
    id            text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    namespace     text NOT NULL CHECK (length(namespace) BETWEEN 1 AND 128),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    version       text NOT NULL CHECK (length(version) BETWEEN 1 AND 64),
    type          text NOT NULL CHECK (type IN ('principle', 'policy', 'procedure', 'heuristic', 'pattern')),
    priority      text NOT NULL DEFAULT 'should' CHECK (priority IN ('must', 'should', 'may')),
    statement     text NOT NULL CHECK (length(statement) BETWEEN 1 AND 4000),
    rationale     text,
    links         jsonb NOT NULL DEFAULT '[]',
    applicability jsonb NOT NULL DEFAULT '{}',
    tags          jsonb NOT NULL DEFAULT '[]',
    meta          jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- Also serves the namespace filter (its leading column).
    UNIQUE (namespace, name, version)
);
CREATE INDEX cwom_doctrine_refs_type_idx ON cwom_doctrine_refs (type, id);

CREATE TABLE cwom_issues (
    id            text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    repo_id       text NOT NULL REFERENCES cwom_repos (id),
    repo_role     text,
    title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 512),
    description   text NOT NULL DEFAULT '',
    type          text NOT NULL CHECK (type IN ('feature', 'bug', 'chore', 'research', 'ops', 'doc', 'incident')),
    priority      text NOT NULL DEFAULT 'P2' CHECK (priority IN ('P0', 'P1', 'P2', 'P3', 'P4')),
    status        text NOT NULL DEFAULT 'planned'
                      CHECK (status IN ('planned', 'ready', 'running', 'blocked', 'done', 'failed', 'canceled')),
    assignees     jsonb NOT NULL DEFAULT '[]',
    watchers      jsonb NOT NULL DEFAULT '[]',
    acceptance    jsonb NOT NULL DEFAULT '{}',
    -- Issue-to-Issue links (parent, blocks…): checked to resolve on write, not queried.
    relationships jsonb NOT NULL DEFAULT '{}',
    tags          jsonb NOT NULL DEFAULT '[]',
    meta          jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX cwom_issues_repo_idx ON cwom_issues (repo_id, id);
CREATE INDEX cwom_issues_status_idx ON cwom_issues (status, id);
CREATE INDEX cwom_issues_type_idx ON cwom_issues (type, id);
CREATE INDEX cwom_issues_priority_idx ON cwom_issues (priority, id);

CREATE TABLE cwom_context_packets (
    id                       text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    issue_id                 text NOT NULL REFERENCES cwom_issues (id),
    issue_role               text,
    version                  text NOT NULL CHECK (length(version) BETWEEN 1 AND 64),
    summary                  text NOT NULL CHECK (length(summary) BETWEEN 1 AND 4000),
    inputs                   jsonb NOT NULL DEFAULT '{}',
    assumptions              jsonb NOT NULL DEFAULT '[]',
    open_questions           jsonb NOT NULL DEFAULT '[]',
    instructions             text NOT NULL DEFAULT '',
    constraint_snapshot_id   text REFERENCES cwom_constraint_snapshots (id),
    constraint_snapshot_role text,
    tags                     jsonb NOT NULL DEFAULT '[]',
    meta                     jsonb NOT NULL DEFAULT '{}',
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL
);
CREATE INDEX cwom_context_packets_issue_idx ON cwom_context_packets (issue_id, id);

CREATE TABLE cwom_runs (
    id                       text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    issue_id                 text NOT NULL REFERENCES cwom_issues (id),
    issue_role               text,
    repo_id                  text NOT NULL REFERENCES cwom_repos (id),
    repo_role                text,
    status                   text NOT NULL DEFAULT 'planned'
                                 CHECK (status IN ('planned', 'ready', 'running', 'blocked', 'done', 'failed', 'canceled')),
    mode                     text NOT NULL CHECK (mode IN ('human', 'agent', 'hybrid', 'system')),
    executor                 jsonb NOT NULL,
    -- inputs.constraint_snapshot, pinned at start.
    constraint_snapshot_id   text REFERENCES cwom_constraint_snapshots (id),
    constraint_snapshot_role text,
    plan                     jsonb NOT NULL DEFAULT '{}',
    telemetry                jsonb NOT NULL DEFAULT '{}',
    cost                     jsonb NOT NULL DEFAULT '{}',
    -- outputs: result_summary and decision_log here; artifacts are the cwom_artifacts rows.
    result_summary           text,
    decision_log             jsonb NOT NULL DEFAULT '[]',
    failure                  jsonb,
    tags                     jsonb NOT NULL DEFAULT '[]',
    meta                     jsonb NOT NULL DEFAULT '{}',
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL
);
-- Also serves Issue.runs.
CREATE INDEX cwom_runs_issue_idx ON cwom_runs (issue_id, id);
CREATE INDEX cwom_runs_repo_idx ON cwom_runs (repo_id, id);
CREATE INDEX cwom_runs_status_idx ON cwom_runs (status, id);
CREATE INDEX cwom_runs_mode_idx ON cwom_runs (mode, id);

CREATE TABLE cwom_artifacts (
    id           text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    run_id       text NOT NULL REFERENCES cwom_runs (id),
    run_role     text,
    issue_id     text NOT NULL REFERENCES cwom_issues (id),
    issue_role   text,
    type         text NOT NULL CHECK (type IN ('code_patch', 'commit', 'pr', 'build', 'container_image', 'doc',
                                               'report', 'dataset', 'log', 'trace', 'binary', 'link')),
    title        text NOT NULL CHECK (length(title) BETWEEN 1 AND 512),
    uri          text NOT NULL CHECK (length(uri) BETWEEN 1 AND 2000),
    digest       text,
    media_type   text,
    size_bytes   bigint CHECK (size_bytes IS NULL OR size_bytes >= 0),
    preview      text CHECK (preview IS NULL OR length(preview) <= 4000),
    verification jsonb NOT NULL DEFAULT '{"status": "unverified", "checks": []}',
    tags         jsonb NOT NULL DEFAULT '[]',
    meta         jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
-- Also serves Run.outputs.artifacts.
CREATE INDEX cwom_artifacts_run_idx ON cwom_artifacts (run_id, id);
CREATE INDEX cwom_artifacts_issue_idx ON cwom_artifacts (issue_id, id);
CREATE INDEX cwom_artifacts_type_idx ON cwom_artifacts (type, id);

-- Ref lists: one row per link, in list order (position), with the Ref's role. The primary
-- key makes a list a set; the second index answers "who links to this?".

CREATE TABLE cwom_issue_context_packets (
    issue_id  text NOT NULL REFERENCES cwom_issues (id),
    packet_id text NOT NULL REFERENCES cwom_context_packets (id),
    role      text,
    position  integer NOT NULL,
    PRIMARY KEY (issue_id, packet_id)
);
CREATE INDEX cwom_issue_context_packets_packet_idx ON cwom_issue_context_packets (packet_id);

CREATE TABLE cwom_issue_doctrine_refs (
    issue_id    text NOT NULL REFERENCES cwom_issues (id),
    doctrine_id text NOT NULL REFERENCES cwom_doctrine_refs (id),
    role        text,
    position    integer NOT NULL,
    PRIMARY KEY (issue_id, doctrine_id)
);
CREATE INDEX cwom_issue_doctrine_refs_doctrine_idx ON cwom_issue_doctrine_refs (doctrine_id);

CREATE TABLE cwom_issue_constraints (
    issue_id    text NOT NULL REFERENCES cwom_issues (id),
    snapshot_id text NOT NULL REFERENCES cwom_constraint_snapshots (id),
    role        text,
    position    integer NOT NULL,
    PRIMARY KEY (issue_id, snapshot_id)
);
CREATE INDEX cwom_issue_constraints_snapshot_idx ON cwom_issue_constraints (snapshot_id);

CREATE TABLE cwom_run_context_packets (
    run_id    text NOT NULL REFERENCES cwom_runs (id),
    packet_id text NOT NULL REFERENCES cwom_context_packets (id),
    role      text,
    position  integer NOT NULL,
    PRIMARY KEY (run_id, packet_id)
);
CREATE INDEX cwom_run_context_packets_packet_idx ON cwom_run_context_packets (packet_id);

CREATE TABLE cwom_run_doctrine_refs (
    run_id      text NOT NULL REFERENCES cwom_runs (id),
    doctrine_id text NOT NULL REFERENCES cwom_doctrine_refs (id),
    role        text,
    position    integer NOT NULL,
    PRIMARY KEY (run_id, doctrine_id)
);
CREATE INDEX cwom_run_doctrine_refs_doctrine_idx ON cwom_run_doctrine_refs (doctrine_id);

CREATE TABLE cwom_packet_doctrine_refs (
    packet_id   text NOT NULL REFERENCES cwom_context_packets (id),
    doctrine_id text NOT NULL REFERENCES cwom_doctrine_refs (id),
    role        text,
    position    integer NOT NULL,
    PRIMARY KEY (packet_id, doctrine_id)
);
CREATE INDEX cwom_packet_doctrine_refs_doctrine_idx ON cwom_packet_doctrine_refs (doctrine_id);
