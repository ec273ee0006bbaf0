"""Accounts, roles and logins for workshop mode; the acting user of every engine call.

    python -m engine.users setup --instructor NAME [--password-stdin]   # once, before `make workshop`
    python -m engine.users add NAME [NAME ...] [--instructor] [--password-stdin] [--json]
    python -m engine.users add --file names.txt                         # a class list, one name a line
    python -m engine.users list [--json] | remove NAME | reset NAME

Two modes (TUNEWISE_MODE): "personal" (the default) has no accounts: one person on their own machine acts as
OWNER, who may do everything. "workshop" puts every page behind a login; a student acts on their own runs and
files only, an instructor on everyone's. Passwords are kept as argon2id hashes (argon2-cffi, the reference
implementation's bindings); a login is a random session token, of which the registry keeps only an HMAC, so a
copy of the database lets nobody in. Choosing a new password ends the account's other logins.

Wrong passwords are counted per name and computer (the browser's address): five in five minutes make that computer
wait for that name. Past fifty failures from one computer (guessing across the roster), or fifty for one name from
anywhere (guessing from many addresses), a computer waits after its first failure for a name. A computer with no
failure for a name is never made to wait for it: nobody elsewhere, nor a classmate behind the same address, can lock
a student or the instructor out of their account. Common passwords, their variants (P@ssw0rd, Welcome2024) and ones
that are little more than the name are refused.
The roster (add, reset, remove) is the instructor's: each call names who acts, and a student is refused.
"""

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass

from engine import paths
from engine.runs.registry import RunError, connect

ROLES = ("student", "instructor")
SESSION_S = 12 * 3600  # a login lasts a teaching day; then the student logs in again (their plan is kept)
MAX_FAILED = 5  # wrong passwords for one name from one computer within LOCK_S before that computer waits
MAX_FAILED_CLIENT = 50  # ...from one computer, whatever the names: then one failure for a name is enough to wait
MAX_FAILED_NAME = 50  # ...for one name from anywhere: then one failure from a computer is enough to wait
LOCK_S = 300
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")  # a name is also a folder under TUNEWISE_HOME/users
MIN_PASSWORD = 8


class AuthError(RunError):
    """A login or account request that cannot be honoured; the message is for a person."""


@dataclass(frozen=True)
class User:
    name: str
    role: str  # student | instructor | owner (personal mode: the machine's one person)

    @property
    def sees_all(self) -> bool:
        return self.role in ("instructor", "owner")


OWNER = User(os.environ.get("USER") or "me", "owner")


def acting(name: str | None) -> User:
    """The user a command line acts as: `--as NAME`, else the machine's administrator (who has the shell anyway)."""
    return find(name) if name else OWNER


def mode() -> str:
    return "workshop" if os.environ.get("TUNEWISE_MODE", "").strip().lower() == "workshop" else "personal"


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id, the library's RFC 9106 "low memory" profile


# A hash checked when the name is unknown, so a wrong name takes as long as a wrong password.
_DUMMY = None


def normalize(name: str) -> str:
    """What a person typed -> the account name ("Ana Lopez" -> "ana-lopez"), or AuthError with a sentence."""
    clean = re.sub(r"\s+", "-", name.strip().lower())
    if not NAME_RE.match(clean):
        raise AuthError(
            f"'{name.strip()}' cannot be an account name: use 1-32 letters a-z, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return clean


def new_password() -> str:
    """A one-time password a student can type from a printed list: four groups of four, no look-alike letters."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


def require_instructor(by: User, what: str) -> None:
    """The roster, the quotas and the class plan are the instructor's (or, in a shell, the machine's owner's)."""
    if not by.sees_all:
        raise AuthError(f"Only an instructor can {what}. Ask your instructor.")


def add(name: str, role: str = "student", password: str | None = None, *, by: User) -> tuple[User, str]:
    """Create an account, as `by` (an instructor). Without a password a one-time one is made, to be changed at the
    first login. Returns (user, the password to hand over)."""
    require_instructor(by, "add accounts")
    name = normalize(name)
    if role not in ROLES:
        raise AuthError(f"Unknown role '{role}'; use one of {', '.join(ROLES)}.")
    one_time = password is None
    password = new_password() if one_time else password
    _check_password(password, name)
    db = connect()
    if db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
        raise AuthError(
            f"There is already an account '{name}'. Choose another name, or `reset {name}` for a new password."
        )
    if db.execute("SELECT 1 FROM runs WHERE owner=?", (name,)).fetchone() or any(paths.user_area(name).glob("*/*")):
        raise AuthError(
            f"A removed account '{name}' still has runs or files here, which a new '{name}' would see. "
            "Choose another name (e.g. with a number), or delete that folder first: "
            f"{paths.user_area(name)}."
        )
    db.execute(
        "INSERT INTO users (name, role, pw_hash, must_change, created_at) VALUES (?, ?, ?, ?, ?)",
        (name, role, _hasher().hash(password), int(one_time), time.time()),
    )
    (paths.user_area(name)).mkdir(parents=True, exist_ok=True)
    return User(name, role), password


# The most used passwords of 8+ characters (the leaked-password lists' top entries), and this tool's own words: the
# first guesses anyone tries against a roster.
COMMON_PASSWORDS = frozenset(
    "password password1 password12 password123 passw0rd 12345678 123456789 1234567890 0123456789 87654321 "
    "11111111 00000000 12341234 qwertyui qwertyuiop qwerty12 qwerty123 1q2w3e4r 1qaz2wsx zaq12wsx asdfghjk "
    "abcdefgh abcd1234 abc12345 iloveyou sunshine football baseball princess superman starwars whatever "
    "welcome1 welcome123 letmein1 trustno1 changeme admin123 administrator hello123 computer internet "
    "workshop workshop1 tunewise students student1 teacher1 instructor finetune training".split()
)


# The words under the usual variants: letters for look-alike digits and symbols, the digits and signs around
# them taken off (P@ssw0rd -> password, Welcome2024 -> welcome, iloveyou1 -> iloveyou).
COMMON_WORDS = frozenset(
    "password passwd passw qwerty qwertyuiop asdf asdfgh asdfghjk zxcvbnm iloveyou welcome letmein admin "
    "administrator sunshine football baseball princess superman starwars whatever monkey dragon master shadow "
    "secret changeme hello login trustno abc abcdef abcdefgh workshop tunewise student teacher instructor "
    "training finetune".split()
)
LOOK_ALIKE = str.maketrans("@4310$5!7", "aaeiossit")


def _check_password(password: str, name: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"A password needs at least {MIN_PASSWORD} characters; choose a longer one.")
    around = "0123456789!?.,_-#*+ "
    word = password.lower().strip(around).translate(LOOK_ALIKE)
    if password.lower() in COMMON_PASSWORDS or word in COMMON_WORDS or len(set(password)) < 3:
        raise AuthError("That password is among the first ones anyone would guess; choose a less common one.")
    if len(password.strip(around)) < 3:
        raise AuthError("A password of digits is among the first ones anyone would guess; add some letters.")
    if name and len(password.lower().replace(name.lower(), "").strip(around)) < 3:
        raise AuthError("A password must be more than the account's name; choose another one.")


def reset(name: str, *, by: User) -> str:
    """A new one-time password for an account (a student who forgot theirs), as `by` (an instructor); their
    sessions end and their failed logins are forgotten."""
    require_instructor(by, "give new passwords")
    user = find(name)
    password = new_password()
    db = connect()
    db.execute("UPDATE users SET pw_hash=?, must_change=1 WHERE name=?", (_hasher().hash(password), user.name))
    db.execute("DELETE FROM sessions WHERE user=?", (user.name,))
    db.execute("DELETE FROM login_failures WHERE name=?", (user.name,))
    return password


def set_password(user: User, old: str, new: str, keep_token: str = "") -> None:
    """A person choosing their own password (after a one-time one): the old one must match. Every other login of
    the account ends (one opened with the one-time password elsewhere, say); keep_token's, the one asking, stays."""
    row = connect().execute("SELECT pw_hash FROM users WHERE name=?", (user.name,)).fetchone()
    if row is None or not _verify(row["pw_hash"], old):
        raise AuthError("The current password is not right. Type the password you logged in with.")
    if new == old:
        raise AuthError("The new password is the same as the old one; choose a different one.")
    _check_password(new, user.name)
    db = connect()
    db.execute("UPDATE users SET pw_hash=?, must_change=0 WHERE name=?", (_hasher().hash(new), user.name))
    db.execute("DELETE FROM sessions WHERE user=? AND token_hash!=?", (user.name, _token_hash(keep_token)))


def find(name: str) -> User:
    row = connect().execute("SELECT name, role FROM users WHERE name=?", (name.strip().lower(),)).fetchone()
    if row is None:
        raise AuthError(f"There is no account '{name}'. `python -m engine.users list` shows the accounts.")
    return User(row["name"], row["role"])


def remove(name: str, *, by: User) -> None:
    """Delete an account and its logins, as `by` (an instructor). Its runs and files stay (an instructor still sees
    them)."""
    require_instructor(by, "remove accounts")
    user = find(name)
    db = connect()
    if (
        user.role == "instructor"
        and db.execute("SELECT COUNT(*) FROM users WHERE role='instructor'").fetchone()[0] == 1
    ):
        raise AuthError(f"'{user.name}' is the last instructor; add another instructor before removing this one.")
    if by.name == user.name:
        raise AuthError("You cannot remove your own account while logged in with it.")
    db.execute("DELETE FROM sessions WHERE user=?", (user.name,))
    db.execute("DELETE FROM users WHERE name=?", (user.name,))


def list_users() -> list[dict]:
    rows = (
        connect().execute("SELECT name, role, must_change, created_at FROM users ORDER BY role DESC, name").fetchall()
    )
    return [{**dict(r), "must_change": bool(r["must_change"])} for r in rows]


def _verify(pw_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(pw_hash, password)  # constant-time comparison inside argon2
    except (VerificationError, InvalidHashError):
        return False


FAILED_LOGIN = (
    "That name and password do not match an account. Check both (the name is the one on your sheet "
    "from the instructor). After 5 failed attempts this computer must wait 5 minutes; the instructor can "
    "give you a new password."
)


def login(name: str, password: str, client: str = "") -> tuple[User, str, bool]:
    """Check a name and password from `client` (the browser's address; "" for this machine). Returns (user,
    session token for the cookie, must choose a new password). Every failure - unknown name, wrong password, a
    client made to wait - reads the same, and an unknown name takes as long as a wrong password, so the login form
    tells nobody which names exist; a client made to wait gets its answer at once, with no hash computed. The attempt
    is counted as failed before the (slow) hash check, in one write transaction, so guesses sent in parallel
    cannot all slip under the limits (the module's docstring), and forgotten when the password is right."""
    global _DUMMY
    key = name.strip().lower()
    db = connect()
    db.execute("BEGIN IMMEDIATE")
    try:
        since = time.time() - LOCK_S
        db.execute("DELETE FROM login_failures WHERE at < ?", (since,))
        count = "SELECT COUNT(*) FROM login_failures WHERE "
        pair = db.execute(count + "name=? AND client=?", (key, client)).fetchone()[0]
        waits = pair >= MAX_FAILED or (
            pair > 0
            and (
                db.execute(count + "client=?", (client,)).fetchone()[0] >= MAX_FAILED_CLIENT
                or db.execute(count + "name=?", (key,)).fetchone()[0] >= MAX_FAILED_NAME
            )
        )
        if not waits:
            db.execute("INSERT INTO login_failures (name, client, at) VALUES (?, ?, ?)", (key, client, time.time()))
        row = db.execute("SELECT * FROM users WHERE name=?", (key,)).fetchone()
    finally:
        db.execute("COMMIT")
    if waits:  # no hash: a flood of guesses costs the server nothing more (unknown names wait the same way)
        raise AuthError(FAILED_LOGIN)
    if row is None:
        _DUMMY = _DUMMY or _hasher().hash(secrets.token_hex(8))
        _verify(_DUMMY, password)  # same time as a real check
        raise AuthError(FAILED_LOGIN)
    if not _verify(row["pw_hash"], password):
        raise AuthError(FAILED_LOGIN)
    db.execute("DELETE FROM login_failures WHERE name=? AND client=?", (key, client))
    token = secrets.token_urlsafe(32)
    db.execute(
        "INSERT INTO sessions (token_hash, user, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (_token_hash(token), key, time.time(), time.time() + SESSION_S),
    )
    db.execute("DELETE FROM sessions WHERE expires_at < ?", (time.time(),))
    return User(row["name"], row["role"]), token, bool(row["must_change"])


def session_user(token: str) -> User:
    """The user a session token (the login cookie) belongs to, or AuthError: expired, logged out, account gone."""
    if not token:
        raise AuthError("You are not logged in. Log in with the name and password from your instructor.")
    row = (
        connect()
        .execute(
            "SELECT u.name, u.role, s.expires_at FROM sessions s JOIN users u ON u.name = s.user WHERE s.token_hash=?",
            (_token_hash(token),),
        )
        .fetchone()
    )
    if row is None or row["expires_at"] < time.time():
        raise AuthError(
            "Your login has ended (it lasts 12 hours, and ends when you log out or the instructor "
            "resets your password). Log in again; your plan and runs are kept."
        )
    return User(row["name"], row["role"])


def must_change(user: User) -> bool:
    row = connect().execute("SELECT must_change FROM users WHERE name=?", (user.name,)).fetchone()
    return bool(row and row["must_change"])


def logout(token: str) -> None:
    connect().execute("DELETE FROM sessions WHERE token_hash=?", (_token_hash(token),))


def _token_hash(token: str) -> str:
    return hmac.new(secret(), token.encode(), hashlib.sha256).hexdigest()


def secret() -> bytes:
    """The server's secret (TUNEWISE_HOME/secret, 0600), made by `setup`: the key of the session-token HMAC."""
    path = paths.home() / "secret"
    if not path.is_file():
        if mode() == "workshop":
            raise AuthError(
                "This workshop server is not set up: run `python -m engine.users setup --instructor NAME` first."
            )
        _write_secret()
    return bytes.fromhex(path.read_text().strip())


def _write_secret() -> None:
    path = paths.home() / "secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


def setup(instructor: str, password: str | None) -> tuple[User, str]:
    """Make the server ready for workshop mode: its secret, the first instructor, the class's default quotas."""
    from engine.runs import queue

    if not (paths.home() / "secret").is_file():
        _write_secret()
    user, password = add(instructor, "instructor", password, by=OWNER)
    paths.home().chmod(0o700)  # the password hashes are in runs.db: nobody else on the server reads them
    queue.set_quota(None, **queue.WORKSHOP_DEFAULTS, only_if_unset=True, by=OWNER)
    for folder in ("models", "data"):
        (paths.shared_dir() / folder).mkdir(parents=True, exist_ok=True)
    return user, password


def setup_problem() -> str | None:
    """Why this server cannot start in workshop mode yet (a sentence), or None when it is set up."""
    if not (paths.home() / "secret").is_file():
        return (
            f"Workshop mode is not set up in {paths.home()}. Run `python -m engine.users setup --instructor "
            "NAME` (it asks for a password), then start again."
        )
    if not connect().execute("SELECT 1 FROM users WHERE role='instructor'").fetchone():
        return "Workshop mode has no instructor account. Run `python -m engine.users add NAME --instructor`."
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.users", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["setup", "add", "list", "remove", "reset"])
    p.add_argument("names", nargs="*")
    p.add_argument(
        "--instructor",
        nargs="?",
        const=True,
        default=False,
        help="add: the accounts are instructors; setup: the first instructor's name",
    )
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--file", help="add: a file with one name a line (a class list)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        password = sys.stdin.readline().rstrip("\n") if a.password_stdin else None
        if a.command == "setup":
            name = a.instructor if isinstance(a.instructor, str) else (a.names[0] if a.names else "")
            if not name:
                raise AuthError("setup needs the first instructor's name: `setup --instructor NAME`.")
            user, pw = setup(name, password)
            return _out(
                {"instructor": user.name, "password": None if password else pw, "home": str(paths.home())},
                a.json,
                f"Workshop set up in {paths.home()}. Instructor '{user.name}'"
                + ("." if password else f", one-time password: {pw}")
                + "\nStart it with `make workshop`.",
            )
        if a.command == "list":
            return _out(
                list_users(),
                a.json,
                "\n".join(
                    f"{u['name']:<24} {u['role']:<10}"
                    + (" (has not chosen a password yet)" if u["must_change"] else "")
                    for u in list_users()
                ),
            )
        names = ([a.instructor] if isinstance(a.instructor, str) else []) + list(a.names)
        names += _read_names(a.file) if a.file else []
        if not names:
            raise AuthError(f"`{a.command}` needs a name (or --file with one name a line).")
        if a.command == "add":
            if password is not None and len(names) > 1:
                raise AuthError("--password-stdin sets one account's password; add the others without it.")
            made = [add(n, "instructor" if a.instructor else "student", password, by=OWNER) for n in names]
            rows = [{"name": u.name, "role": u.role, "password": None if password else pw} for u, pw in made]
            return _out(
                rows, a.json, "\n".join(f"{r['name']:<24} {r['password'] or '(the password you gave)'}" for r in rows)
            )
        if a.command == "reset":
            rows = [{"name": find(n).name, "password": reset(n, by=OWNER)} for n in names]
            return _out(rows, a.json, "\n".join(f"{r['name']:<24} {r['password']}" for r in rows))
        for n in names:
            remove(n, by=OWNER)
        return _out({"removed": names}, a.json, f"removed {', '.join(names)} (their runs and files are kept)")
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _read_names(file: str) -> list[str]:
    try:
        lines = open(file, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise AuthError(f"Cannot read {file} ({e.strerror}). Give a text file with one name a line.") from None
    return [line.split(",")[0].strip() for line in lines if line.strip() and not line.startswith("#")]


def _out(value, as_json: bool, text: str) -> int:
    print(json.dumps(value, default=str) if as_json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
