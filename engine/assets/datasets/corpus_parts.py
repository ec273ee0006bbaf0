"""Hand-written sentences the pretraining corpus is composed from (make_datasets.py shuffles and joins them).

Each topic has sentences that can stand in any order, so a paragraph is 3-5 of them plus a worked example.
Written for this project; no outside text.
"""

TOPICS = {
    "prioritising": [
        "Priority says what happens first when there is not time for everything.",
        "A useful rule is that no more than a third of open tasks should be high priority; when everything is urgent, nothing is.",  # noqa: E501
        "Low priority does not mean unimportant: it means the task can wait without harm.",
        "Teams that review priorities weekly spend less time arguing about them daily.",
        "When two high-priority tasks collide, the one that blocks other people usually goes first.",
        "A priority should be revisited when a deadline moves, not only when someone complains.",
    ],
    "capturing tasks": [
        "A task is captured well when someone else could pick it up from the title alone.",
        "Good titles start with a verb: review, draft, book, fix, send.",
        "Writing a task down the moment it appears frees attention for the work in front of you.",
        "A title should name one outcome; 'plan the offsite and book the venue' is two tasks.",
        "Vague titles such as 'budget stuff' tend to stay open for weeks because nobody knows when they are done.",
        "Capturing a task takes seconds; reconstructing a forgotten one can take hours.",
    ],
    "status tracking": [
        "Most trackers use three statuses: pending, in progress and done.",
        "A task moves to in progress when someone has actually started, not when it has been assigned.",
        "Marking work as done the moment it finishes keeps the board honest.",
        "Too many tasks in progress at once is a warning sign that work is being started but not finished.",
        "Logging finished work, even small items, gives a record that helps at review time.",
        "A status that has not changed for two weeks deserves a question at the next stand-up.",
    ],
    "sprint planning": [
        "Sprint planning turns a long backlog into a short list the team commits to.",
        "A sprint plan that fills every hour leaves no room for the surprises that always come.",
        "Teams often plan to about seventy or eighty percent of their capacity.",
        "The sprint goal is a sentence, not a list; it says why these tasks belong together.",
        "Tasks that cannot be finished inside one sprint should be split before planning, not during it.",
    ],
    "backlogs": [
        "A backlog is a list of work that has been captured but not yet scheduled.",
        "Backlogs grow faster than they shrink unless someone prunes them regularly.",
        "Items that have sat untouched for a quarter can usually be closed without loss.",
        "Ordering the backlog is a conversation about value, cost and risk.",
        "A short, ordered backlog is more useful than a long, unsorted one.",
    ],
    "deadlines": [
        "A deadline without an owner is a wish.",
        "Working back from a deadline shows which tasks must start this week.",
        "Buffers belong at the end of a plan, not hidden inside every estimate.",
        "When a deadline slips, saying so early is cheaper than saying so late.",
        "Hard deadlines come from outside, such as a tax date or a launch; soft ones are chosen and can move.",
    ],
    "meetings": [
        "A meeting should end with tasks, each with an owner and a date.",
        "Stand-ups work best when they are about blockers rather than reports.",
        "An agenda sent in advance turns a meeting from a discussion into a decision.",
        "Notes that do not become tasks are usually forgotten within a week.",
        "Retrospectives ask what to keep, what to drop and what to try next time.",
    ],
    "estimation": [
        "Estimates are most useful as ranges: two to four days says more than three days.",
        "People tend to underestimate familiar work and overestimate unfamiliar work.",
        "Breaking a task into steps of half a day or less makes estimates far more reliable.",
        "Comparing a new task with a finished one is often better than estimating from scratch.",
        "An estimate is not a promise; it is the best guess with what is known today.",
    ],
    "dependencies": [
        "A dependency is a task that cannot start until another one finishes.",
        "Dependencies between teams deserve a name and a date, or they become surprises.",
        "The longest chain of dependent tasks sets the earliest possible finish date.",
        "Drawing dependencies, even on paper, reveals which task is really urgent.",
        "Starting the blocking task early is usually worth more than finishing an easy one.",
    ],
    "personal productivity": [
        "Time blocking reserves parts of the calendar for deep work.",
        "The two-minute rule says a task that takes less than two minutes should be done now, not tracked.",
        "A weekly review closes loops: inboxes emptied, tasks updated, next week sketched.",
        "Batching similar tasks, such as calls or emails, reduces the cost of switching.",
        "A short list for today is easier to finish than a long list for someday.",
        "Energy matters as much as time: hard tasks go where attention is highest.",
    ],
    "structured task data": [
        "Task trackers store each task as a small record with named fields.",
        "A machine-readable task usually has a title, a priority and a status.",
        "JSON is a common format for such records because every programming language can read it.",
        "Keeping field names and allowed values fixed lets other tools read the tasks without guessing.",
        "Priorities are usually limited to a few values such as high, medium and low.",
        "When a request does not say how important a task is, trackers commonly default to medium priority.",
    ],
}

CONNECTIVES = [
    "",
    "",
    "",
    "In practice, ",
    "For most teams, ",
    "As a rule, ",
    "Experience shows that ",
    "It helps to remember that ",
    "On a busy week, ",
]
EXAMPLES = [
    "For example, '{title}' might be tracked with {priority} priority while it is {status_words}.",
    "Take '{title}': a tracker would store it as {json}.",
    'A request such as "{request}" becomes the record {json}.',
    "Consider a task called '{title}'; marked {priority} priority, it is {status_words}.",
]
STATUS_WORDS = {"pending": "still waiting to be started", "in_progress": "being worked on", "done": "already finished"}
