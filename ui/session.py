"""Who is using this browser tab, and their plan: the login of workshop mode (a cookie holding a session token
the registry checks on every rerun), and the plan kept server-side per user (engine/plans.py)."""

import json
import os

import streamlit as st

from engine import plans, users
from engine.hardware import HardwareError, preset_hardware, this_computer
from engine.recommend import model_notes
from engine.spec import RunSpec

COOKIE = "tunewise_session"


def actor() -> users.User:
    """The acting user every engine call gets: the logged-in account, or the machine's one person."""
    if users.mode() == "personal":
        return users.OWNER
    # Checked again on every call: a part of a page that refreshes itself (the live run view, the class view)
    # reruns without the frame, and must not outlive a logout, a password reset or a removed account.
    try:
        return users.session_user(st.session_state.get("token", ""))
    except users.AuthError as e:
        st.error(f"{e} Reload the page to log in.")
        st.stop()


KINDS = {"base": "base model: pretrained only, not yet tuned to follow requests", "instruct": "instruction-tuned"}


def model_label(model: str) -> str:
    """The plan's model as the pages name it: the bundled one by its name, any other as given; a catalog model with
    what kind it is (engine/assets/model_notes.yaml), since "-pt" or no suffix at all says little to a newcomer."""
    if model == "embedded":
        return "SmolLM2-135M-Instruct (bundled with the app)"
    kind = (model_notes().get(model) or {}).get("kind")
    return f"{model} ({KINDS[kind]})" if kind in KINDS else model


def warn_if_planned_elsewhere(what: str) -> None:
    """A plan for other hardware (a preset on the Hardware page) than the one runs train on: the pages say so where
    they speak of that hardware, or a newcomer picks an 8B model for an RTX 4090 and presses Start on a laptop."""
    here, planned = this_computer(), st.session_state.get("hardware")
    if planned is None or planned.detected or planned.kind == here.kind:
        return
    st.warning(
        f"Your plan is for **{planned.name}**, but runs started here train on **{here.name}**: {what} "
        "To plan for this computer, choose it on the Hardware page."
    )


def acting_name(user: users.User) -> str:
    """What engine subprocesses get as --as: "" for the machine's one person, else the logged-in user's name."""
    return "" if user.role == "owner" else user.name


def _set_cookie(token: str, max_age: int) -> None:
    # SameSite=Strict: no other site's page can make the browser send it. Not HttpOnly: only script can set a
    # cookie from a Streamlit page; the pages render no one's HTML but the app's own.
    secure = "; Secure" if os.environ.get("TUNEWISE_SSL_CERT") else ""  # served over HTTPS (engine/serve.py)
    st.html(
        f"<script>document.cookie = '{COOKIE}={token}; path=/; max-age={max_age}; SameSite=Strict{secure}';</script>",
        unsafe_allow_javascript=True,
    )


def _cookie() -> str:
    """The login cookie the browser sent when this tab connected ("" if none; AppTest has no browser)."""
    try:
        value = st.context.cookies.get(COOKIE, "")
    except Exception:  # noqa: BLE001  no request behind this session
        return ""
    return value if isinstance(value, str) else ""


def require_login() -> users.User:
    """Workshop mode: return the logged-in user, or draw the login (or choose-a-password) form and stop."""
    problem = users.setup_problem()
    if problem:
        st.error(problem)
        st.stop()
    token = st.session_state.get("token") or _cookie()
    user = None
    if token and not st.session_state.get("logged_out"):
        try:
            user = users.session_user(token)
        except users.AuthError as e:
            if "token" in st.session_state:  # it ended while this tab was open: say so
                st.warning(str(e))
            for key in ("token", "user", "plan_loaded", "one_time_password"):
                st.session_state.pop(key, None)
    if user is None:
        login_form()
        st.stop()
    if st.session_state.get("user") != user:  # a new login, or a reload with the cookie
        for key in ("plan_loaded", "spec", "goals", "hardware"):
            st.session_state.pop(key, None)
    st.session_state.user, st.session_state.token = user, token
    with st.sidebar:
        if _cookie() != token:
            _set_cookie(token, users.SESSION_S)
    if users.must_change(user):
        choose_password(user)
        st.stop()
    if st.session_state.pop("password_saved", False):
        st.toast("Password saved. Use it from now on.", icon="✅")
    return user


def login_form() -> None:
    if st.session_state.pop("logged_out", False):
        _set_cookie("", 0)
        st.success("You are logged out. Your plan and runs are kept for your next login.")
    st.title("🎛️ Tunewise workshop")
    st.write("Log in with the name and password your instructor gave you.")
    with st.form("login"):
        name = st.text_input("Name", autocomplete="username")  # so password managers fill the form
        password = st.text_input("Password", type="password", autocomplete="current-password")
        go = st.form_submit_button("Log in", type="primary")
    if go and not (name.strip() and password):  # not a failed login: nothing to count, nothing to lock
        st.error("Type your name and password.")
    elif go:
        try:
            user, token, one_time = users.login(name, password, _client())
        except users.AuthError as e:
            st.error(str(e))
            return
        st.session_state.user, st.session_state.token = user, token
        if one_time:  # for the choose-a-password form next, so it does not ask again for what was just typed
            st.session_state.one_time_password = password  # server-side only, and only until that form is done
        st.rerun()
    st.caption("Forgot your password? Ask the instructor: they can give you a new one-time password.")


def _client() -> str:
    """The browser's address, which failed logins are counted per (engine/users.py); "local" on this machine."""
    address = st.context.ip_address  # None through localhost
    return address if isinstance(address, str) and address else "local"


def choose_password(user: users.User) -> None:
    st.title(f"Welcome, {user.name}")
    st.write(
        "You logged in with a one-time password. Choose your own password to continue (at least "
        f"{users.MIN_PASSWORD} characters)."
    )
    # The one-time password this tab just logged in with (login_form) is the account's as long as this login lives
    # (a reset ends it), so it is not asked again; after a reload with the cookie it is.
    typed = st.session_state.get("one_time_password", "")
    with st.form("password"):
        old = typed or st.text_input("One-time password", type="password", autocomplete="current-password")
        new = st.text_input("New password", type="password", autocomplete="new-password")
        again = st.text_input("New password again", type="password", autocomplete="new-password")
        go = st.form_submit_button("Save my password", type="primary")
    if go:
        if new != again:
            st.error("The two new passwords differ; type the same password twice.")
            return
        try:
            users.set_password(user, old, new, keep_token=st.session_state.get("token", ""))
        except users.AuthError as e:
            st.error(str(e))
            return
        st.session_state.pop("one_time_password", None)
        st.session_state.password_saved = True  # shown once on the first page (require_login)
        st.rerun()


def logout_button() -> None:
    if st.sidebar.button("Log out", key="logout"):
        users.logout(st.session_state.get("token", ""))
        for key in list(st.session_state):
            del st.session_state[key]
        st.session_state.logged_out = True
        st.rerun()


# ---------------------------------------------------------------- the plan, kept per user


def restore_plan(user: users.User) -> None:
    """Once per login: the user's saved plan, else the class plan, else a fresh one."""
    if st.session_state.get("plan_loaded") == user.name:
        return
    st.session_state.plan_loaded = user.name
    if "spec" in st.session_state:  # this session already holds a plan (set before the frame first ran)
        return
    plan = plans.load(user.name) or plans.class_plan()
    if plan is None:
        st.session_state.spec = RunSpec()
        return
    apply_plan(plan)


def apply_plan(plan: dict) -> None:
    st.session_state.spec = plans.spec_of(plan)
    st.session_state.goals = list(plan.get("goals") or [])
    for key in [k for k in st.session_state if str(k).startswith("goal_")]:
        del st.session_state[key]  # the checkboxes follow the restored goals
    hardware = plan.get("hardware") or {}
    st.session_state.pop("hardware_choice", None)
    if hardware.get("preset"):
        try:
            st.session_state.hardware = preset_hardware(hardware["preset"], int(hardware.get("count") or 1))
        except HardwareError:
            st.session_state.pop("hardware", None)
    elif hardware.get("chosen"):
        st.session_state.hardware = this_computer()
    else:
        st.session_state.pop("hardware", None)


def current_plan() -> dict:
    return plans.plan_of(st.session_state.spec, st.session_state.get("goals"), st.session_state.get("hardware"))


def save_plan(user: users.User) -> None:
    """After every rerun (also one a page ended early): store the plan if it changed."""
    if "spec" not in st.session_state:
        return
    plan = current_plan()
    text = json.dumps(plan, sort_keys=True)
    if st.session_state.get("_saved_plan") != text:
        plans.save(user.name, plan)
        st.session_state._saved_plan = text
