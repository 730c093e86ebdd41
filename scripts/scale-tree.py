#!/usr/bin/env python3
"""Deterministic server-shaped tree for scripts/bench-scale.sh, and its slow change.

usage: scale-tree.py make DEST NFILES [LARGE_MIB]
       scale-tree.py mutate DEST ROUND CHURN      (ROUND = 2, 3, ...; CHURN a fraction, 0.002 = 0.2 %)

make: NFILES files below DEST in about NFILES/25 folders, 1 to 10 deep, under
the top folders of a server (etc, home, opt, srv, var/lib, var/log, ...).
Almost all are small (log-normal, median 1 KiB, at most 256 KiB; 90 % text
slices of a word corpus, 10 % incompressible), a few are large (LARGE_MIB in
all, default NFILES/1000, in files of 8 to 64 MiB, half incompressible), and
one log (var/log/app/app.log) grows every round. File times are pinned
(1700000000), so two trees made alike are alike.

mutate: one 4-hour step of a server's life, driven by random.Random(ROUND):
CHURN of the small files change: 35 % modified (half an append of 40 to 600
bytes, half rewritten whole), 15 % renamed (half to another folder), 25 %
deleted, and as many created as deleted; the log grows by NFILES/4000 KiB
(at least 16); 8 pages of 4 KiB are overwritten in one large file. Changed
files get the round's time (1700000000 + ROUND * 14400).

Both keep the list of small files in DEST.files, the folders in DEST.dirs
and the text corpus in DEST.corpus (beside DEST, not in it), and print one JSON line: what they did and
"changed_bytes", the bytes written (appends, rewrites, new files, pages,
log); renames and deletes write none.
"""
import json
import math
import os
import random
import sys

T0 = 1700000000
STEP = 14400
TOPS = ["etc", "home", "opt/app", "srv/www", "var/lib/app", "var/spool", "usr/local/share", "var/backups"]
WORDS = ("backup snapshot chunk index pack blob tree object repository key encrypt compress upload "
         "retry bucket region prune forget check verify restore file directory metadata mtime size "
         "inode owner group mode invoice customer order report config template session cache user "
         "account page image thumbnail static module vendor release build deploy service").split()
LOG = "var/log/app/app.log"
CORPUS_BYTES = 8 << 20


def corpus(dest):
    """The word corpus text is sliced from: made once, kept in DEST.corpus."""
    cached = dest + ".corpus"
    if os.path.exists(cached):
        with open(cached, "rb") as f:
            return f.read()
    r = random.Random(7)
    out, n = [], 0
    while n < CORPUS_BYTES:
        line = " ".join(r.choice(WORDS) if r.random() < 0.85 else "%08x" % r.getrandbits(32)
                        for _ in range(r.randrange(4, 16))) + "\n"
        out.append(line)
        n += len(line)
    text = "".join(out).encode()[:CORPUS_BYTES]
    with open(cached, "wb") as f:
        f.write(text)
    return text


def small_size(r):
    return max(16, min(256 << 10, int(r.lognormvariate(math.log(1024), 1.1))))


def content(r, text, rel, size):
    head = ("# %s %d\n" % (rel, r.getrandbits(40))).encode()
    if r.random() < 0.1:
        body = r.randbytes(max(0, size - len(head)))
    else:
        off = r.randrange(CORPUS_BYTES - (256 << 10))
        body = text[off:off + max(0, size - len(head))]
    return head + body


def write(path, data, t):
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (t, t))


def load(dest):
    with open(dest + ".files") as f:
        files = f.read().split("\n")[:-1]
    with open(dest + ".dirs") as f:
        dirs = f.read().split("\n")[:-1]
    return files, dirs


def save(dest, files, dirs):
    for name, rows in (("files", files), ("dirs", dirs)):
        tmp = "%s.%s.tmp" % (dest, name)
        with open(tmp, "w") as f:
            f.write("".join(x + "\n" for x in rows))
        os.replace(tmp, "%s.%s" % (dest, name))


def make(dest, nfiles, large_mib):
    r = random.Random(1)
    if os.path.exists(dest):
        sys.exit("refusing: %s exists" % dest)
    text = corpus(dest)
    # Folders: a random recursive tree below the top folders, capped at 10 deep.
    dirs = list(TOPS)
    depth = {d: d.count("/") + 1 for d in dirs}
    for i in range(max(1, nfiles // 25)):
        p = r.choice(dirs)
        while depth[p] >= 10:
            p = p.rsplit("/", 1)[0] if "/" in p else p
            if depth.get(p, 10) < 10:
                break
        d = "%s/%s-%d" % (p, r.choice(WORDS), i)
        dirs.append(d)
        depth[d] = depth[p] + 1
    for d in dirs + ["var/log/app", "var/lib/app/large"]:
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    files, nbytes = [], 0
    for i in range(nfiles):
        rel = "%s/%s-%07d.%s" % (r.choice(dirs), r.choice(WORDS), i, r.choice(("txt", "json", "html", "conf", "dat")))
        data = content(r, text, rel, small_size(r))
        write(os.path.join(dest, rel), data, T0)
        files.append(rel)
        nbytes += len(data)
    nlarge, left = 0, large_mib << 20
    while left > 0:
        size = min(left, r.randrange(8, 65) << 20)
        p = os.path.join(dest, "var/lib/app/large/store-%02d.db" % nlarge)
        with open(p, "wb") as f:
            for off in range(0, size, 1 << 20):
                n = min(1 << 20, size - off)
                if nlarge % 2:
                    f.write(r.randbytes(n))
                else:
                    o = r.randrange(CORPUS_BYTES - n)
                    f.write(text[o:o + n])
        os.utime(p, (T0, T0))
        nlarge += 1
        left -= size
        nbytes += size
    log = text[:64 << 10]
    write(os.path.join(dest, LOG), log, T0)
    nbytes += len(log)
    save(dest, files, dirs)
    print(json.dumps({"files": len(files) + nlarge + 1, "small_files": len(files), "large_files": nlarge,
                      "dirs": len(dirs), "bytes": nbytes}))


def mutate(dest, rnd, churn):
    r = random.Random(rnd)
    t = T0 + rnd * STEP
    text = corpus(dest)
    files, dirs = load(dest)
    n = max(4, round(len(files) * churn))
    picked = r.sample(range(len(files)), n)
    n_mod, n_ren = round(n * 0.35), round(n * 0.15)
    mod, ren, dele = picked[:n_mod], picked[n_mod:n_mod + n_ren], picked[n_mod + n_ren:]
    did = {"round": rnd, "appended": 0, "rewritten": 0, "renamed": 0, "deleted": 0, "created": 0}
    changed = 0
    for i in mod:
        p = os.path.join(dest, files[i])
        if r.random() < 0.5:
            line = text[r.randrange(CORPUS_BYTES - 1024):][:r.randrange(40, 600)]
            with open(p, "ab") as f:
                f.write(line)
            os.utime(p, (t, t))
            did["appended"] += 1
            changed += len(line)
        else:
            data = content(r, text, files[i], small_size(r))
            write(p, data, t)
            did["rewritten"] += 1
            changed += len(data)
    for i in ren:
        old = files[i]
        d = r.choice(dirs) if r.random() < 0.5 else old.rsplit("/", 1)[0]
        new = "%s/%s-r%d-%d.%s" % (d, r.choice(WORDS), rnd, i, old.rsplit(".", 1)[-1])
        os.rename(os.path.join(dest, old), os.path.join(dest, new))
        files[i] = new
        did["renamed"] += 1
    for i in dele:
        os.unlink(os.path.join(dest, files[i]))
        did["deleted"] += 1
    gone = set(dele)
    files = [f for j, f in enumerate(files) if j not in gone]
    for j in range(len(dele)):
        rel = "%s/%s-n%d-%d.txt" % (r.choice(dirs), r.choice(WORDS), rnd, j)
        data = content(r, text, rel, small_size(r))
        write(os.path.join(dest, rel), data, t)
        files.append(rel)
        did["created"] += 1
        changed += len(data)
    grow = max(16, len(files) // 4000) << 10
    off = r.randrange(CORPUS_BYTES - grow)
    with open(os.path.join(dest, LOG), "ab") as f:
        f.write(text[off:off + grow])
    os.utime(os.path.join(dest, LOG), (t, t))
    changed += grow
    large = sorted(os.listdir(os.path.join(dest, "var/lib/app/large")))
    if large:
        p = os.path.join(dest, "var/lib/app/large", large[rnd % len(large)])
        pages = os.path.getsize(p) // 4096
        with open(p, "r+b") as f:
            for _ in range(8):
                f.seek(r.randrange(pages) * 4096)
                f.write(r.randbytes(4096))
        os.utime(p, (t, t))
        changed += 8 * 4096
    save(dest, files, dirs)
    did["changed_bytes"] = changed
    did["small_files"] = len(files)
    print(json.dumps(did))


def main():
    a = sys.argv[1:]
    if len(a) >= 3 and a[0] == "make":
        make(a[1].rstrip("/"), int(a[2]), int(a[3]) if len(a) > 3 else int(a[2]) // 1000)
    elif len(a) == 4 and a[0] == "mutate":
        mutate(a[1].rstrip("/"), int(a[2]), float(a[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
