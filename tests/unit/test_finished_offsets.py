"""What a batch subscriber may commit: only finished records, never across a revocation."""

from aiokafka import ConsumerRecord, TopicPartition

from leanon_shared.commits import FinishedOffsets

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def records(tp: TopicPartition, *offsets: int) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        ConsumerRecord(tp.topic, tp.partition, o, 0, 0, None, b"", 0, 0, [], None) for o in offsets
    ]


def test_the_offset_after_the_last_finished_record_of_each_partition() -> None:
    offsets = FinishedOffsets()
    assert not offsets.pending
    offsets.finish([*records(A, 3, 4), *records(B, 0)], offsets.generation)
    assert offsets.pending
    assert offsets.uncommitted({A, B}) == {A: 5, B: 1}
    assert offsets.uncommitted({B}) == {B: 1}  # only what is still assigned
    offsets.finish(records(A, 2), offsets.generation)  # an older batch again: no step back
    assert offsets.uncommitted({A}) == {A: 5}


def test_committed_offsets_are_not_pending_until_more_finishes() -> None:
    offsets = FinishedOffsets()
    offsets.finish(records(A, 0, 1), offsets.generation)
    offsets.committed({A: 2}, offsets.generation)
    assert not offsets.pending and offsets.uncommitted({A}) == {}
    offsets.finish(records(A, 2), offsets.generation)
    assert offsets.uncommitted({A}) == {A: 3}


def test_a_batch_from_before_a_revocation_finishes_into_nothing() -> None:
    offsets = FinishedOffsets()
    fetched_in = offsets.generation
    offsets.finish(records(A, 0), fetched_in)
    offsets.forget({A})
    offsets.finish(records(A, 1, 2), fetched_in)  # the handler was still busy at revocation
    offsets.committed({A: 3}, fetched_in)  # and so was a commit
    assert not offsets.pending and offsets.uncommitted({A}) == {}
