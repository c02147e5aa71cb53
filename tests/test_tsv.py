"""MultiClinAI TSV: reading like pandas does, line-numbered errors, exact and atomic writing."""

import os
import re
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dt4h_spacy.textfiles import atomic_write
from dt4h_spacy.tsv import Mention, TSVError, format_mentions, parse_mentions, read_mentions, write_mentions

HEADER = "filename\tlabel\tstart_span\tend_span\ttext\n"


def write(path, text):
    path.write_bytes(text.encode("utf-8"))
    return path


def test_reads_rows_in_file_order(tmp_path):
    path = write(tmp_path / "gold.tsv", HEADER + "b\tDISEASE\t10\t18\tdiabetes\na\tDISEASE\t0\t4\tgota\n")
    assert read_mentions(path) == [Mention("b", "DISEASE", 10, 18, "diabetes"), Mention("a", "DISEASE", 0, 4, "gota")]


def test_columns_are_found_by_name_and_extra_columns_ignored(tmp_path):
    text = "ann_id\ttext\tend_span\tstart_span\tlabel\tfilename\nT1\tasma\t9\t5\tDISEASE\tdoc1\n"
    assert read_mentions(write(tmp_path / "x.tsv", text)) == [Mention("doc1", "DISEASE", 5, 9, "asma")]


def test_bom_blank_lines_and_crlf_rows_are_accepted(tmp_path):
    text = "\ufeff" + HEADER.replace("\n", "\r\n") + "\r\ndoc\tDISEASE\t0\t4\tasma\r\n\r\n"
    assert read_mentions(write(tmp_path / "x.tsv", text)) == [Mention("doc", "DISEASE", 0, 4, "asma")]


def test_quoted_text_is_read_like_pandas(tmp_path):
    # A field that starts with a quote is a quoted field: "" is one quote, tabs and newlines
    # inside belong to the text; a quote inside an unquoted field is an ordinary character.
    text = HEADER + 'd\tDISEASE\t0\t9\t"a ""b""\tc\nd"\nd\tDISEASE\t10\t15\tsay "x"\n'
    assert [m.text for m in read_mentions(write(tmp_path / "x.tsv", text))] == ['a "b"\tc\nd', 'say "x"']


def test_integral_float_offsets_are_accepted_like_pandas_astype_int(tmp_path):
    text = HEADER + "d\tDISEASE\t3.0\t7\tasma\n"
    assert read_mentions(write(tmp_path / "x.tsv", text))[0].start == 3


def test_distemist_column_names_need_aliases(tmp_path):
    text = "filename\tmark\tlabel\toff0\toff1\tspan\ndoc\tT1\tENFERMEDAD\t0\t4\tasma\n"
    path = write(tmp_path / "distemist.tsv", text)
    assert read_mentions(path, aliases=True) == [Mention("doc", "ENFERMEDAD", 0, 4, "asma")]
    with pytest.raises(TSVError, match=r"line 1: missing column\(s\) start_span, end_span, text"):
        read_mentions(path)


@pytest.mark.parametrize(
    "row, message",
    [
        ("d\tDISEASE\t15\t12\tx", "gold.tsv line 3: end_span (12) <= start_span (15)"),
        ("d\tDISEASE\t12\t12\tx", "gold.tsv line 3: end_span (12) <= start_span (12)"),
        ("d\tDISEASE\tten\t12\tx", "gold.tsv line 3: start_span 'ten' is not an integer"),
        ("d\tDISEASE\t1\t2.5\tx", "gold.tsv line 3: end_span '2.5' is not a whole number"),
        ("d\tDISEASE\t-1\t2\tx", "gold.tsv line 3: start_span (-1) is negative"),
        ("d\tDISEASE\t1\t2", "gold.tsv line 3: expected 5 tab-separated fields like the header, got 4"),
        ("d\tDISEASE\t1\t2\tx\ty", "gold.tsv line 3: expected 5 tab-separated fields like the header, got 6"),
        ("\tDISEASE\t1\t2\tx", "gold.tsv line 3: empty filename"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path / "gold.tsv", HEADER + "d\tDISEASE\t0\t4\tasma\n" + row + "\n")
    with pytest.raises(TSVError, match=re.escape(message)):
        read_mentions(path)


def test_error_line_counts_physical_lines_of_multiline_quoted_fields(tmp_path):
    text = HEADER + 'd\tDISEASE\t0\t9\t"two\nlines"\nd\tDISEASE\t9\t3\tx\n'
    with pytest.raises(TSVError, match="line 4: end_span"):
        read_mentions(write(tmp_path / "gold.tsv", text))


def test_missing_header_and_empty_file_are_explained(tmp_path):
    with pytest.raises(TSVError, match=r"line 1: missing column\(s\) filename, label, start_span, end_span, text"):
        read_mentions(write(tmp_path / "x.tsv", "doc1\tDISEASE\t0\t4\tasma\n"))
    with pytest.raises(TSVError, match="empty file"):
        read_mentions(write(tmp_path / "y.tsv", ""))


def test_unreadable_files_raise_tsv_errors(tmp_path):
    (tmp_path / "bad.tsv").write_bytes(HEADER.encode() + b"d\tDISEASE\t0\t4\tasm\xe1\n")
    with pytest.raises(TSVError, match="bad.tsv: not valid UTF-8"):
        read_mentions(tmp_path / "bad.tsv")
    with pytest.raises(TSVError, match="missing.tsv: cannot read"):
        read_mentions(tmp_path / "missing.tsv")


def test_format_is_the_authors_layout_with_a_clear_quoting_rule():
    mentions = [Mention("d", "DISEASE", 0, 4, "asma"), Mention("d", "DISEASE", 5, 12, 'a\tb"c\rd')]
    assert format_mentions(mentions) == HEADER + 'd\tDISEASE\t0\t4\tasma\nd\tDISEASE\t5\t12\t"a\tb""c\rd"\n'


def test_a_lone_carriage_return_is_quoted(tmp_path):
    # Python's csv writer would leave it bare with lineterminator="\n", splitting the row.
    assert format_mentions([Mention("d", "DISEASE", 0, 3, "a\rb")]).endswith('d\tDISEASE\t0\t3\t"a\rb"\n')
    write_mentions(tmp_path / "out.tsv", [Mention("d", "DISEASE", 0, 3, "a\rb")])
    assert read_mentions(tmp_path / "out.tsv")[0].text == "a\rb"


def test_write_sorts_by_filename_then_start(tmp_path):
    rows = [Mention("b", "DISEASE", 0, 4, "x"), Mention("a", "DISEASE", 9, 12, "y"), Mention("a", "DISEASE", 2, 5, "z")]
    write_mentions(tmp_path / "out.tsv", rows)
    assert [(m.filename, m.start) for m in read_mentions(tmp_path / "out.tsv")] == [("a", 2), ("a", 9), ("b", 0)]


# Biased towards the characters that need quoting, which random unicode rarely produces.
texts = st.text(st.one_of(st.sampled_from(["\t", '"', "\n", "\r", " ", "\u00a0", "\U0001F60A", "a"]),
                          st.characters(blacklist_categories=("Cs",))), max_size=12)
mentions = st.builds(Mention, filename=st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True),
                     label=st.sampled_from(["DISEASE", "SYMPTOM"]), start=st.integers(0, 50),
                     end=st.integers(51, 99), text=texts)


@settings(max_examples=200, deadline=None)
@given(st.lists(mentions, max_size=8))
def test_write_then_read_gives_back_every_mention(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("rt") / "out.tsv"
    write_mentions(path, rows)
    assert sorted(read_mentions(path), key=repr) == sorted(rows, key=repr)


def test_atomic_write_keeps_the_old_file_and_leaves_no_temp_on_interrupt(tmp_path):
    target = write(tmp_path / "out.tsv", "old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as handle:
            handle.write("partial")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.tsv"]


def test_atomic_write_gives_a_new_file_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.tsv") as handle:
            handle.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.tsv").st_mode) == 0o644


def test_atomic_write_onto_a_directory_fails_cleanly(tmp_path):
    (tmp_path / "out.tsv").mkdir()
    with pytest.raises(OSError):
        with atomic_write(tmp_path / "out.tsv") as handle:
            handle.write("x")
    assert sorted(os.listdir(tmp_path)) == ["out.tsv"]


def test_parse_mentions_takes_lines():
    assert parse_mentions([HEADER, "d\tDISEASE\t0\t4\tasma\n"], source="inline") == [Mention("d", "DISEASE", 0, 4, "asma")]


QUALIFIED = Mention("d", "DISEASE", 0, 4, "asma", 0.5, negated=True, uncertain=False, family=True)


def test_qualifiers_are_no_part_of_a_mentions_identity():
    assert QUALIFIED == Mention("d", "DISEASE", 0, 4, "asma")
    assert QUALIFIED.qualifiers == {"negated": True, "uncertain": False, "hypothetical": None,
                                    "historical": None, "family": True}
    assert Mention(*QUALIFIED.values).values == QUALIFIED.values


def test_context_columns_are_written_only_on_request_and_read_back(tmp_path):
    assert format_mentions([QUALIFIED]) == HEADER + "d\tDISEASE\t0\t4\tasma\n"
    text = format_mentions([QUALIFIED], with_scores=True, with_context=True)
    assert text == ("filename\tlabel\tstart_span\tend_span\ttext\tscore\tnegated\tuncertain\thypothetical\t"
                    "historical\tfamily\nd\tDISEASE\t0\t4\tasma\t0.5000\ttrue\tfalse\t\t\ttrue\n")
    write_mentions(tmp_path / "q.tsv", [QUALIFIED], with_context=True)
    (back,) = read_mentions(tmp_path / "q.tsv")
    assert back.qualifiers == QUALIFIED.qualifiers


def test_qualifier_cells_accept_common_spellings_and_name_a_bad_one(tmp_path):
    text = HEADER.replace("\n", "\tnegated\tfamily\n") + "d\tDISEASE\t0\t4\tasma\tTrue\t0\nd\tDISEASE\t5\t9\tgota\tYES\t\n"
    first, second = read_mentions(write(tmp_path / "g.tsv", text))
    assert (first.negated, first.family, second.negated, second.family) == (True, False, True, None)
    bad = write(tmp_path / "bad.tsv", HEADER.replace("\n", "\tnegated\n") + "d\tDISEASE\t0\t4\tasma\tmaybe\n")
    with pytest.raises(TSVError, match=r"bad.tsv line 2: negated 'maybe' is not a yes/no value"):
        read_mentions(bad)
