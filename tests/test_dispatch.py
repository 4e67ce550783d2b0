"""How queued publishes become broker messages (``dispatch.coalesce``)."""

from __future__ import annotations

from django_orq_contacts import dispatch

SYNC, MANY, DELETE = dispatch.SYNC_TASK, dispatch.SYNC_MANY_TASK, dispatch.DELETE_TASK


def sync(pk, **kwargs):
    return (SYNC, (str(pk),), kwargs)


def test_a_lone_save_stays_one_sync_contact():
    assert dispatch.coalesce([sync(7)]) == [sync(7)]


def test_a_burst_becomes_sync_contacts_messages_of_bounded_size_each_user_once():
    size = dispatch.USERS_PER_MESSAGE
    jobs = [sync(pk) for pk in range(2 * size + 5)] + [sync(3), sync(2 * size)]
    messages = dispatch.coalesce(jobs)
    assert [name for name, _, _ in messages] == [MANY, MANY, MANY]
    assert [len(args[0]) for _, args, _ in messages] == [size, size, 5]
    assert [pk for _, args, _ in messages for pk in args[0]] == [
        str(pk) for pk in range(2 * size + 5)
    ]


def test_only_runs_of_the_same_kind_are_joined_so_messages_keep_their_order():
    jobs = [
        sync(1),
        sync(2, force=False),
        (DELETE, (9,), {}),
        sync(3),
        sync(1, force=True),
        sync(4, force=True),
        sync(5),
    ]
    assert dispatch.coalesce(jobs) == [
        (MANY, (["1", "2"],), {}),
        (DELETE, (9,), {}),
        (SYNC, ("3",), {}),
        (MANY, (["1", "4"],), {"force": True}),
        (SYNC, ("5",), {}),
    ]
