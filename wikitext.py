"""
Wikitext to plain text: what a reader of a Wikipedia article sees, as paragraphs, headings and list
items, with no markup left. Pure functions on strings, kept apart from the reading and writing in
prepare.py, which cleans every page of a dump with them; the tests check them one rule at a time.

    clean_wikitext("'''تهران''' پایتخت [[ایران]] است.<ref>منبع</ref>")  ->  "تهران پایتخت ایران است."
    page_dropped_as("#REDIRECT [[تهران]]")  ->  "redirect"

Markup that renders as text becomes that text: a link shows its label, a few templates show their
words (language, date and unit templates), entities are decoded. Everything else goes: templates,
tables, references, files, categories, comments. A removed element that a reader would see as a
break between words leaves a space, so that words on either side are not glued.

Regular expressions rather than a MediaWiki parser, for speed over a whole dump: nested constructs
are peeled innermost first, one level per pass, and where a pattern could backtrack over a long
span it uses possessive quantifiers, which never do, or lazy ones that stop at the first end they
find (COMMENT, UNCLOSED_BLOCK, HEADING). Malformed markup (an unclosed template, reference or
table) costs only itself, never the rest of the article.
"""

import html
import re

import regex

import bpe

# Rendered in place of a removed element that a reader would see as a break between words: a
# reference between two sentences (است.<ref>…</ref>جمله) must not glue them (است.جمله).
GAP = " "
# <nowiki>text</nowiki> shows its text as written (which may not open <nowiki> again: an unclosed one
# costs one scan, not one per <nowiki>)
NOWIKI = regex.compile(r"<nowiki\s*>((?:[^<]++|<(?!/?nowiki\b))*+)</nowiki\s*>", regex.I)
# inside <nowiki>, markup characters become numeric entities: no rule below sees them as markup,
# and html.unescape, last of all, gives them back as the literal text MediaWiki shows
NOWIKI_ESCAPES = str.maketrans({c: f"&#{ord(c)};" for c in "{}[]<>|'=_&*#:;~-"})
COMMENT = regex.compile(r"<!--.*?(?:-->|\Z)", regex.S)
# elements whose content is not running text; they are dropped with everything inside
NOT_TEXT_TAGS = ("ref|references|math|chem|ce|gallery|timeline|imagemap|syntaxhighlight|source|score"
                 "|graph|mapframe|maplink|hiero|templatedata|categorytree|inputbox|includeonly")
# From an opening tag (not a self-closing <ref name=x />, see UNCLOSED_INLINE) to its closing
# tag; the content may not open the same tag again, so an unclosed <ref> costs one scan, not one per <ref>.
# Possessive quantifiers (*+, ++) never give back what they matched: no backtracking, time linear.
NOT_TEXT_BLOCK = regex.compile(rf"<({NOT_TEXT_TAGS})\b[^<>]*(?<!/)>[^<]*+(?:<(?!/?\1\b)[^<]*+)*+</\1\s*>",
                               regex.I)
# What is left of those is self-closing (<ref name=a />) or unclosed. An unclosed <ref> (or <math>,
# <ce> ...) inside a sentence costs only its tag; an unclosed gallery, timeline ... holds lines of file
# names and data up to the next blank line.
UNCLOSED_INLINE = regex.compile(r"<(?:ref|math|chem|ce|maplink|hiero)\b[^<>]*>", regex.I)
UNCLOSED_BLOCK = regex.compile(rf"<(?:{NOT_TEXT_TAGS})\b[^<>]*(?<!/)>.*?(?:\n[^\S\n]*\n|\Z)",
                               regex.I | regex.S)
# {{{1|default}}}: a template's parameter, copied into an article with its template's code, shows its default
TEMPLATE_PARAMETER = regex.compile(r"\{\{\{[^{}|]*+(?:\|([^{}]*+))?\}\}\}")
# A template holding no other template. Its content may hold single braces, balanced ({{math|x ∈ {1, 2}}})
# or not, so that a stray brace costs only its template, not everything to the end of the paragraph.
INNERMOST_TEMPLATE = regex.compile(r"\{\{((?:[^{}]++|\{[^{}]*+\}(?=[^}]|\}\})|\{(?!\{)|\}(?!\}))*+)\}\}")
# a table {| ... |} holding no other table (templates inside it are gone by the time it is matched)
INNERMOST_TABLE = regex.compile(r"\{\|[^{|]*+(?:(?:\{(?!\|)|\|(?!\}))[^{|]*+)*+\|\}")
UNCLOSED_TEMPLATE = regex.compile(r"\{\{[^{}|\n]*+\|?")  # a {{ never closed costs only itself and its name
# [[target|label]] holding no other link; the label may hold single brackets: [[a|b [c]]]
INNERMOST_LINK = regex.compile(r"\[\[((?:[^\[\]]++|\[[^\[\]]*+\](?=[^\]]|\]\])|\[(?!\[)|\](?!\]))*+)\]\]")
# Most links are [[target]] or [[target|label]] with no namespace: these show target or label, a
# replacement done in C; link_text, a Python call per link, decides the rest.
PLAIN_LINK = regex.compile(r"\[\[(?:[^\[\]|:]*+\|(?=[^\[\]|]*+\]\])(?=\s*+[^\s\]]))?([^\[\]|:]*+)\]\]")
EXTERNAL_LINK = regex.compile(r"(?<!\[)\[(?:https?:|ftp:)?//[^\s\[\]]*+(?:[ \t]++([^\[\]\n]*+))?\]")
MAX_NESTING = 40  # bounds the innermost-first passes, so malformed input cannot loop for long
# links into these namespaces show a picture or put the page in a category: no text to keep
NO_TEXT_NAMESPACES = {"پرونده", "تصویر", "file", "image", "مدیا", "media", "رده", "category"}
LANGUAGE_CODE = regex.compile(r"[a-z]{2,3}(?:-[a-z0-9]+)*|simple")  # [[en:Spain]] and the like
BOLD_ITALIC = regex.compile(r"'{2,}")
MAGIC_WORD = regex.compile(r"__[^\s_]+__")  # __TOC__, __بی‌فهرست__
# tags that start a new block on the page: what is on either side of them is not one word
BLOCK_TAG = regex.compile(r"</?(?:br|div|center|p|blockquote|poem|li|ul|ol|dl|dt|dd|table|tr|td|th|hr"
                          r"|h[1-6])\b[^<>]*>", regex.I)
HTML_TAG = regex.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*>")  # <small>, <span ...>, <sup> ...: keep the text
HEADING = regex.compile(r"(={1,6})\s*(.+?)\s*\1")
LIST_MARKS = regex.compile(r"^[*#:;]+\s*")
TABLE_STARTS = ("|", "!")  # with "{|": rows of a table that could not be matched whole
LIST_STARTS = ("*", "#", ":", ";")
WORD = regex.compile(r"\w")
EMPTY_PARENTHESES = regex.compile(r"\([\s،,;:؛]*\)")
# (re finds a space before punctuation faster than regex; regex is faster after an opening bracket)
SPACE_BEFORE_PUNCTUATION = re.compile(r" (?=[،؛:.,;!?؟)\]»])")
SPACE_AFTER_OPENING = regex.compile(r"([(\[«]) ")

# -----------------------------------------------------------------------------
# Templates that show text. Every template is removed (infoboxes, citations, navigation boxes,
# notices, pronunciations, audio, coordinates ...) except these, whose arguments are words of the
# sentence they sit in. Names are compared lower-case, with spaces, underscores and ZWNJs alike.

# MediaWiki's Persian month names (languages/messages/MessagesFa.php) by number, for the date templates
MONTHS = dict(enumerate(("ژانویه", "فوریه", "مارس", "آوریل", "مه", "ژوئن", "ژوئیه", "اوت", "سپتامبر", "اکتبر",
                         "نوامبر", "دسامبر"), 1))
# fawiki's language templates are named after the language ({{آلمانی|Berlin}}, {{به انگلیسی|...}})
# or its code ({{lang-es|España}}); around the foreign words they show the language's name, left out here
LANGUAGES = ("انگلیسی", "فرانسوی", "آلمانی", "عربی", "اسپانیایی", "ایتالیایی", "روسی", "ترکی",
             "ترکی استانبولی", "یونانی", "لاتین", "ژاپنی", "چینی", "کره ای", "پرتغالی", "هلندی", "عبری",
             "کردی", "آذربایجانی", "ارمنی", "گرجی", "اردو", "هندی", "پشتو", "سوئدی", "لهستانی", "فارسی",
             "پهلوی", "اوستایی", "سانسکریت", "تاجیکی", "ازبکی", "ترکمنی")
LANGUAGE_TEMPLATE = regex.compile(r"lang-[a-z]{2,3}(?:-[a-z0-9]+)*")  # {{lang-ar|...}}, {{lang-de|...}}


def argument(k):
    """The k-th unnamed argument, as the template shows it."""
    return lambda args: args[k - 1] if len(args) >= k else ""


def date_text(args):
    """{{birth date|1950|5|3}} -> 3 مه 1950: day, month name, year; an age or anything else is left out."""
    try:
        year, month, day = args[:3]
        return f"{day.strip()} {MONTHS[int(month)]} {year.strip()}"
    except (ValueError, KeyError):  # not year|month|day with a month of 1..12: the words given
        return " ".join(args[:3])


def measure_text(args):
    """{{convert|10|km|mi}} -> 10 km, {{convert|3|to|5|m}} -> 3–5 m: the measure and its unit only."""
    if len(args) >= 4 and args[1].strip() in ("-", "–", "to", "and", "or", "by", "x", "×"):
        return f"{args[0].strip()}–{args[2].strip()} {args[3].strip()}"
    return " ".join(arg.strip() for arg in args[:2])


TEMPLATE_TEXT = {
    **{prefix + name: argument(1) for name in LANGUAGES for prefix in ("", "به ")},
    "lang": argument(2),  # {{lang|fr|Paris}}
    "نستعلیق": argument(1), "nastaliq": argument(1),  # text set in the Nastaliq script
    "nowrap": argument(1), "nobr": argument(1), "small": argument(1), "big": argument(1),
    "سخ": "\n", "br": "\n", "-": "\n", "clear": "\n", "پاک کن": "\n",  # line breaks and clears
    "birth date": date_text, "death date": date_text, "birth date and age": date_text,
    "death date and age": date_text, "start date": date_text, "end date": date_text,
    "convert": measure_text, "cvt": measure_text,
}
TEMPLATE_NAME_SPACES = regex.compile(r"[\s_\u200c]+")
TEMPLATE_NAMESPACE = regex.compile(r"^(?:الگو|template)\s*:\s*", regex.I)
# a link is matched first and skipped whole ((*SKIP)(*FAIL)): a | inside [[target|label]] does not split arguments
ARGUMENT_SEPARATOR = regex.compile(r"\[\[[^\[\]]*+\]\](*SKIP)(*FAIL)|\|")
NAMED_ARGUMENT = regex.compile(r"\s*[\w\s-]+=")


def template_arguments(body, start):
    """The unnamed arguments in a template's body from `start` on: split at each | outside a link."""
    return [arg for arg in ARGUMENT_SEPARATOR.split(body[start:]) if not NAMED_ARGUMENT.match(arg)]


def template_text(match):
    """What a reader sees of an innermost template: its text if TEMPLATE_TEXT knows it, else a gap."""
    body = match[1]
    name, pipe, _ = body.partition("|")
    key = TEMPLATE_NAMESPACE.sub("", TEMPLATE_NAME_SPACES.sub(" ", name).strip().lower())
    render = TEMPLATE_TEXT.get(key) or (argument(1) if LANGUAGE_TEMPLATE.fullmatch(key) else GAP)
    if isinstance(render, str):
        return render
    return render(template_arguments(body, len(name) + 1) if pipe else [])


def link_text(match):
    """What a reader sees for [[target|label]]: the label, the target, or nothing."""
    target, pipe, label = match[1].partition("|")
    namespace, colon, _ = target.partition(":")
    namespace = namespace.strip().replace("_", " ").lower()
    if colon and not target.startswith(":"):  # a leading colon makes [[:رده:x]] an ordinary link
        # file links go with their captions, links inside captions included; interlanguage links show nothing
        if namespace in NO_TEXT_NAMESPACES or not pipe and LANGUAGE_CODE.fullmatch(namespace):
            return ""
    if not pipe:
        return target.lstrip(":")
    if not label.strip():  # the pipe trick: [[شیراز (شهر)|]] shows شیراز
        return regex.sub(r"\s*\(.*\)\s*$", "", target.lstrip(":"))
    return label


def remove_innermost_first(text, rules):
    """Apply the (pattern, replacement) rules until nothing matches: each pass peels one level of nesting."""
    for _ in range(MAX_NESTING):
        changes = 0
        for pattern, replacement in rules:
            text, n = pattern.subn(replacement, text)
            changes += n
        if not changes:
            break
    return text


def clean_lines(text):
    """Headings on their own line, list items as plain lines; table leftovers, empty lines and the
    headings of sections left empty (their templates or tables removed) dropped."""
    lines = []  # (heading level, text); level 0 is body text, "" a paragraph break
    for line in text.split("\n"):
        line = line.strip()
        first = line[:1]  # most lines are plain text: their first character rules out the patterns
        heading = HEADING.fullmatch(line) if first == "=" else None
        if heading and WORD.search(heading[2]):
            lines.append((len(heading[1]), heading[2]))
            continue
        if first in TABLE_STARTS or line.startswith("{|"):
            line = ""
        elif first in LIST_STARTS:
            line = LIST_MARKS.sub("", line)
        lines.append((0, line if WORD.search(line) else ""))
    # Backwards, so we know whether text follows a heading before the next heading of its rank:
    # top_level is the smallest level (highest rank) among the headings between here and the text.
    out, text_follows, top_level = [], False, 7
    for level, line in reversed(lines):
        if not level:
            out.append(line)
            if line:
                text_follows, top_level = True, 7
            continue
        if text_follows and level < top_level:
            out.extend(["", line, ""])
        top_level = min(top_level, level)
    return "\n".join(reversed(out))


def clean_wikitext(wikitext):
    """Plain text of an article's wikitext: paragraphs, headings and list items, no markup."""
    text = NOWIKI.sub(lambda m: m[1].translate(NOWIKI_ESCAPES), wikitext)
    text = COMMENT.sub("", text)
    text = NOT_TEXT_BLOCK.sub(GAP, text)
    text = UNCLOSED_BLOCK.sub("\n", UNCLOSED_INLINE.sub(GAP, text))
    text = remove_innermost_first(text, [(TEMPLATE_PARAMETER, r"\1"), (INNERMOST_TEMPLATE, template_text),
                                         (INNERMOST_TABLE, "\n")])
    text = UNCLOSED_TEMPLATE.sub(GAP, text).replace("}}", GAP)
    text = remove_innermost_first(text, [(PLAIN_LINK, r"\1"), (INNERMOST_LINK, link_text),
                                         (EXTERNAL_LINK, r"\1")])
    text = text.replace("[[", "").replace("]]", "")
    text = MAGIC_WORD.sub("", BOLD_ITALIC.sub("", text))
    text = HTML_TAG.sub("", BLOCK_TAG.sub("\n", text))
    text = bpe.collapse_whitespace(clean_lines(EMPTY_PARENTHESES.sub("", html.unescape(text))))
    # the gaps removed references and templates left before punctuation and after an opening bracket
    return SPACE_AFTER_OPENING.sub(r"\1", SPACE_BEFORE_PUNCTUATION.sub("", text))


# -----------------------------------------------------------------------------
# Pages that are no article

REDIRECT = regex.compile(r"\s*#\s*(?:redirect|تغییر[ _\u200c]?مسیر)", regex.I)
# fawiki marks a disambiguation page, a list of links to the articles a title may mean, with
# {{ابهام‌زدایی}} (or enwiki's name for it, {{disambig}}), or with the Disambiguator extension's magic
# word, __DISAMBIG__ or its Persian alias __ابهام‌زدایی__
DISAMBIGUATION = regex.compile(r"\{\{\s*(?:ابهام[ _\u200c]?زدایی|disambig(?:uation)?)\s*(?:\||\}\})"
                               r"|__(?:DISAMBIG|ابهام[ _\u200c]?زدایی)__", regex.I)
# Looked for first, as plain strings, far faster than the pattern (or than lower-casing the page): one is
# in every marker in Persian, in lower case after its first letter or in capitals; {{DisAmbig}} is missed
DISAMBIGUATION_HINTS = ("ابهام", "isambig", "ISAMBIG")


def page_dropped_as(wikitext):
    """Why a page with this wikitext is no article to keep: "redirect", "disambiguation", or None."""
    if REDIRECT.match(wikitext):
        return "redirect"
    if any(hint in wikitext for hint in DISAMBIGUATION_HINTS) and DISAMBIGUATION.search(wikitext):
        return "disambiguation"
    return None
