# Finds likely secrets, one line at a time; used by scripts/check-secrets.sh.
# Input: text files (mode=files) or `git diff -U0` output (mode=diff: only added lines).
# Output: path TAB line TAB kind TAB value, one row per finding; the caller applies the
# allow-list and never prints a value in full. POSIX awk: no intervals, no gawk extensions.

BEGIN {
    FS = "\n"
    min_len = 12        # shortest assigned value judged by entropy
    min_entropy = 3.0   # bits per character (random hex ~3.7+, base64 ~4.4+)
}

function emit(kind, value) {
    gsub(/\t/, " ", value)
    printf "%s\t%d\t%s\t%s\n", path, lineno, kind, value
}

function entropy(s,    n, i, c, counts, h, p) {
    n = length(s)
    if (n == 0) return 0
    for (i = 1; i <= n; i++) counts[substr(s, i, 1)]++
    h = 0
    for (c in counts) {
        p = counts[c] / n
        h -= p * log(p) / log(2)
    }
    return h
}

# ${VAR}, $VAR, <value>, {name}, %s, ***, xxxx, or the bare word "password": shapes of a value
# to be filled in, not a value.
function placeholder(v) {
    return v ~ /^(\$|<|\{|%|\*+$|[xX]+$)/ || tolower(v) ~ /^(pass|password|passwd|secret|token)$/
}

function scan(line,    rest, v, pw, q, tail, name_re, m) {
    if (line ~ /-----BEGIN[ A-Z0-9]*PRIVATE KEY( BLOCK)?-----/) emit("private-key", "PEM block")

    rest = line
    while (match(rest, /whsec_[A-Za-z0-9+\/=]+/)) {
        if (RLENGTH >= 6 + 16) emit("signing-secret", substr(rest, RSTART, RLENGTH))
        rest = substr(rest, RSTART + RLENGTH)
    }

    rest = line
    while (match(rest, /[Bb]earer[ \t]+[A-Za-z0-9._~+\/=-]+/)) {
        v = substr(rest, RSTART, RLENGTH)
        sub(/^[Bb]earer[ \t]+/, "", v)
        if (length(v) >= 20) emit("bearer-token", v)
        rest = substr(rest, RSTART + RLENGTH)
    }

    # Tokens with a provider's prefix: GitHub, Slack, AWS access key ids, Stripe live keys.
    rest = line
    while (match(rest, /(gh[pousr]_[A-Za-z0-9]+|github_pat_[A-Za-z0-9_]+|xox[abprs]-[A-Za-z0-9-]+|AKIA[0-9A-Z]+|sk_live_[A-Za-z0-9]+)/)) {
        v = substr(rest, RSTART, RLENGTH)
        if (length(v) >= 20) emit("provider-token", v)
        rest = substr(rest, RSTART + RLENGTH)
    }

    rest = line
    while (match(rest, /hooks\.slack\.com\/services\/[A-Za-z0-9]+\/[A-Za-z0-9]+\/[A-Za-z0-9]+/)) {
        v = substr(rest, RSTART, RLENGTH)
        sub(/.*\//, "", v)
        if (length(v) >= 16) emit("slack-webhook", v)
        rest = substr(rest, RSTART + RLENGTH)
    }

    # scheme://user:password@host: the value is the URL up to the host (the host tells a
    # fixture, e.g. example.com); only the password is judged, and never printed.
    rest = line
    while (match(rest, /[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\/:@ \t"'<>]*:[^@\/ \t"']+@[A-Za-z0-9.:_\[\]-]*/)) {
        v = substr(rest, RSTART, RLENGTH)
        pw = v
        sub(/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\/:@ \t"'<>]*:/, "", pw)
        sub(/@.*$/, "", pw)
        if (!placeholder(pw)) emit("url-password", v)
        rest = substr(rest, RSTART + RLENGTH)
    }

    # NAME = "value" (any file) or NAME=value / NAME: value starting a line (env, shell,
    # YAML), NAME ending in SECRET, TOKEN, KEY or PASSWORD (any case), value of high entropy.
    name_re = "[A-Za-z0-9_.-]*([Ss][Ee][Cc][Rr][Ee][Tt]|[Tt][Oo][Kk][Ee][Nn]|[Kk][Ee][Yy]|[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]|[Pp][Aa][Ss][Ss][Ww][Dd])"
    rest = line
    while (match(rest, name_re "[\"']?[ \t]*(:[ \t]*&?('static[ \t]+)?[A-Za-z]+[ \t]*)?(=>|:=|=|:)[ \t]*[\"']")) {
        q = substr(rest, RSTART + RLENGTH - 1, 1)
        tail = substr(rest, RSTART + RLENGTH)
        m = index(tail, q)
        if (m == 0) break
        v = substr(tail, 1, m - 1)
        assigned(v)
        rest = substr(tail, m + 1)
    }
    if (match(line, "^[ \t]*(export[ \t]+|-[ \t]+)?" name_re "[ \t]*(=|:[ \t])[ \t]*[^ \t\"'#]")) {
        v = substr(line, RSTART + RLENGTH - 1)
        sub(/[ \t]+#.*$/, "", v)
        sub(/[ \t]+$/, "", v)
        # Code (`api_key: Option<String>,`) is not a value; secrets in code are quoted.
        if (v !~ /[ \t<>(),;{}\[\]]/) assigned(v)
    }
}

function assigned(v) {
    if (length(v) >= min_len && !placeholder(v) && entropy(v) >= min_entropy) emit("secret-assignment", v)
}

mode == "files" {
    if (FNR == 1) path = FILENAME
    lineno = FNR
    scan($0)
    next
}

mode == "diff" && /^diff --git / { in_header = 1; next }
mode == "diff" && in_header && /^\+\+\+ / {
    path = substr($0, 5)
    sub(/^b\//, "", path)
    next
}
mode == "diff" && /^@@ / {
    in_header = 0
    # @@ -a[,b] +c[,d] @@: added lines are numbered from c.
    lineno = $0
    sub(/^@@ -[0-9,]+ \+/, "", lineno)
    sub(/[^0-9].*$/, "", lineno)
    lineno = lineno + 0
    next
}
mode == "diff" && !in_header && /^\+/ {
    scan(substr($0, 2))
    lineno++
    next
}
mode == "diff" && !in_header && /^ / { lineno++; next }
