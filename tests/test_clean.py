"""Cleaning wikitext (wikitext.py) so the text reads as the article does: no words glued where markup
was removed, templates that show words keep them, a broken construct costs only itself; pages that
are no article (redirects, disambiguation pages) dropped."""

from collections import Counter

import pytest

import prepare
import wikitext


@pytest.mark.parametrize("source, expected", [
    ("الف {{جعبه|a={{b|c}}|d}} ب", "الف ب"),  # nested templates
    ("{{جعبه اطلاعات کشور\n|نام = ایران\n|پایتخت = [[تهران]]\n}}\nمتن اصلی", "متن اصلی"),  # infobox
    ("پیش\n{| class=wikitable\n|-\n| a || {|\n| درونی\n|}\n|}\nپس", "پیش\n\nپس"),  # nested tables
    ("متن<ref>{{cite web|url=http://x.org}}</ref> ادامه", "متن ادامه"),  # <ref>...</ref>
    ('یک<ref name="a" /> دو<ref name=b>منبع</ref>.', "یک دو."),  # <ref .../> and named refs
    ("الف <!-- یادداشت [[x]] --> ب", "الف ب"),  # HTML comments
    ("فرمول <math>x^{2}</math> است", "فرمول است"),  # <math>
    ("<gallery>\nپرونده:a.jpg|شرح\n</gallery>\nمتن", "متن"),  # <gallery>
    ("[[پرونده:a.jpg|بندانگشتی|عکس [[تهران]] در [[شب|شب‌ها]]]] متن", "متن"),  # file link, nested links
    ("[[تصویر:b.png|چپ|شرح]]متن", "متن"),  # تصویر: alias
    ("[[File:x.svg|thumb|A [[b|c]] caption]] text [[Image:y.png]]", "text"),  # File: and Image:
    ("متن\n[[رده:ایران]]\n[[Category:Iran]]", "متن"),  # category links
    ("متن [[en:Iran]] [[de:Iran]] [[zh-yue:伊朗]]", "متن"),  # interlanguage links
    ("__TOC__ متن __بی‌فهرست__", "متن"),  # magic words
    ("'''ایران''' کشوری ''بزرگ'' و '''''کهن''''' است", "ایران کشوری بزرگ و کهن است"),  # bold, italic
    ("[[تهران|پایتخت]] ایران", "پایتخت ایران"),  # [[a|b]] -> b
    ("[[تهران]] بزرگ", "تهران بزرگ"),  # [[a]] -> a
    ("[[جنگ ستارگان: امید تازه]] و [[Star Wars: A New Hope|فیلم]]", "جنگ ستارگان: امید تازه و فیلم"),
    ("[[:رده:ایران]] و [[شیراز (شهر)|]]", "رده:ایران و شیراز"),  # leading colon, pipe trick
    ("[http://example.com سایت نمونه] و [http://example.org]", "سایت نمونه و"),  # external links
    ("== تاریخ ==\nمتن تاریخ", "تاریخ\n\nمتن تاریخ"),  # headings on their own line
    ("== پانویس ==\n{{پانویس}}\n== منابع ==\nمتن", "منابع\n\nمتن"),  # an emptied section goes
    ("* یک\n* [[دو]]\n# سه\n: چهار", "یک\nدو\nسه\nچهار"),  # list items keep their text
    ("الف&nbsp;ب &amp; ج &lt;د&gt;", "الف ب & ج <د>"),  # HTML entities
    ('<small>ریز</small> و <span style="x">متن</span><br/>خط', "ریز و متن\nخط"),  # tags keep text
    ("شهر {{صدا|De-Berlin.ogg|آوا}} ({{IPA|bɛʁˈliːn}})، پایتخت", "شهر، پایتخت"),  # gaps left behind
])
def test_clean_wikitext_rule(source, expected):
    assert wikitext.clean_wikitext(source) == expected


@pytest.mark.parametrize("source, expected", [
    # a reference between two sentences, or before punctuation, or at a line's end
    ("تهران بزرگ است.<ref>منبع</ref>جملهٔ بعد", "تهران بزرگ است. جملهٔ بعد"),
    ("تهران بزرگ است<ref>منبع</ref>.", "تهران بزرگ است."),
    ('یک<ref name="الف" />دو', "یک دو"),
    ("کتاب<ref>{{یادکرد کتاب|عنوان=x}}</ref>، قلم<ref>y</ref>؛ دفتر", "کتاب، قلم؛ دفتر"),
    # an unclosed <ref> costs only its tag
    ("گفته است.<ref name=a>گفتهٔ او\nجملهٔ بعد", "گفته است. گفتهٔ او\nجملهٔ بعد"),
    # removed templates between words leave a space, line-break templates a line break
    ("الف{{سخ}}ب", "الف\nب"),
    ("الف{{-}}ب", "الف\nب"),
    ("الف{{پاک‌کن}}ب", "الف\nب"),
    ("شهر{{بدون منبع}}روستا", "شهر روستا"),
    ("سال ۱۳۵۰{{مدرک}}.", "سال ۱۳۵۰."),
    # a non-breaking space between a number and its unit: a plain space, as the tidied text has it
    ("۱۰{{فاصله نشکن}}کیلومتر", "۱۰ کیلومتر"),
    ("۱۰{{فاصله‌نشکن}}کیلومتر", "۱۰ کیلومتر"),
    ("۵{{nbsp}}متر", "۵ متر"),
    ("[http://example.com{{nbsp}}سایت]", "سایت"),  # and so it parts a link from its label
    # block tags side by side are separate lines; inline tags join their words
    ("<div>یک</div><div>دو</div>", "یک\n\nدو"),
    ("<center>عنوان</center>متن", "عنوان\nمتن"),
    ("یک<br>دو<br />سه", "یک\nدو\nسه"),
    ("آب<sub>۲</sub>و <small>ریز</small>", "آب۲و ریز"),
    # comments are no gap: the words around them are one word on the page
    ("کتاب<!-- یادداشت -->خانه", "کتابخانه"),
])
def test_removed_markup_does_not_glue_words(source, expected):
    assert wikitext.clean_wikitext(source) == expected


@pytest.mark.parametrize("source, expected", [
    # language templates keep the foreign words
    ("نام آن {{به انگلیسی|Tehran}} است", "نام آن Tehran است"),
    ("برلین {{آلمانی|Berlin}} پایتخت است", "برلین Berlin پایتخت است"),
    ("نیروها {{اسپانیایی|Fuerzas Armadas}} هستند", "نیروها Fuerzas Armadas هستند"),
    ("(به {{lang-es|España}} {{IPA-es|esˈpaɲa||Es-España.ogg}})، کشور", "(به España)، کشور"),
    ("واژهٔ {{lang-ar|كتاب}} عربی است", "واژهٔ كتاب عربی است"),
    ("شهر {{lang|fr|Paris}} زیباست", "شهر Paris زیباست"),
    ("شهر {{Lang-de|Berlin}} است", "شهر Berlin است"),  # the first letter's case does not matter
    ("{{الگو:به_انگلیسی|Iran}} کشور", "Iran کشور"),  # namespace and underscores
    # text in a script or a wrapper
    ("بیت {{نستعلیق|بشنو از نی}} است", "بیت بشنو از نی است"),
    ("از {{nowrap|[[تهران|پایتخت]] ایران}} تا", "از پایتخت ایران تا"),  # a link's pipe is no argument
    # dates: day, MediaWiki's Persian month name, year; the age is left out
    ("زاده {{birth date|1950|5|3}} است", "زاده 3 مه 1950 است"),
    ("درگذشته {{death date and age|1990|12|1|1920|1|1}}", "درگذشته 1 دسامبر 1990"),
    ("آغاز {{start date|۱۹۸۰|۷|۲|df=y}}", "آغاز ۲ ژوئیه ۱۹۸۰"),  # named arguments are not text
    ("سال {{birth date|1950}}", "سال 1950"),  # not year|month|day: the words given
    ("سال {{birth date|1950|0|3}}", "سال 1950 0 3"),  # nor is a month outside 1..12
    # unit conversions keep the measure and its unit
    ("طول {{convert|10|km|mi}} است", "طول 10 km است"),
    ("ارتفاع {{convert|3|to|5|m}} است", "ارتفاع 3–5 m است"),
    ("وزن {{cvt|7|kg}} است", "وزن 7 kg است"),
    # everything else goes
    ("متن {{یادکرد وب|نشانی=http://x.org|عنوان=y}} ادامه", "متن ادامه"),
    ("شهر {{صدا|De-Berlin.ogg|آوا}} است", "شهر است"),
])
def test_templates_that_show_text_keep_it(source, expected):
    assert wikitext.clean_wikitext(source) == expected


@pytest.mark.parametrize("source, expected", [
    # a stray brace inside a template costs that template only
    ("فرمول {{math|x ∈ {1, 2}}} است و جملهٔ بعد هم هست.", "فرمول است و جملهٔ بعد هم هست."),
    ("الف {{x|a { b}} ب و پ", "الف ب و پ"),
    ("الف {{x|a } b}} ب و پ", "الف ب و پ"),
    ("الف {{جعبه|{{x|{1}}}|y}} ب", "الف ب"),
    # parser functions and template parameters
    ("متن {{#if:{{{1|}}}|الف|ب}} ادامه دارد.", "متن ادامه دارد."),
    ("متن {{#switch:{{{نوع}}}|a=b|c}} ادامه دارد.", "متن ادامه دارد."),
    ("کد {{{1|پیش‌فرض}}} و {{{2}}} پایان", "کد پیش‌فرض و پایان"),
    # a {{ never closed costs itself and its name; a }} never opened costs itself
    ("متن {{ناقص|بدون بستن و ادامهٔ متن", "متن بدون بستن و ادامهٔ متن"),
    ("{{a|b}}}} متن", "متن"),
    # links with brackets in their label, and stray brackets
    ("[[الف|ب [ج]]] و بعد", "ب [ج] و بعد"),
    ("[[الف|ب [ج]] و بعد", "ب [ج و بعد"),
    ("[[تهران]] و [یک", "تهران و [یک"),
    # an unclosed gallery holds file lines up to the next blank line
    ("متن\n<gallery>\nپرونده:a.jpg|شرح\nپرونده:b.jpg|شرح دو\n\nپاراگراف بعد", "متن\n\nپاراگراف بعد"),
    ("متن<gallery>\nپرونده:a.jpg|شرح", "متن"),
    ("یک <math>x^2 دو", "یک x^2 دو"),
    # <nowiki> shows its text as written
    ("نمونه <nowiki>[[پیوند]] و {{الگو}}</nowiki> متن", "نمونه [[پیوند]] و {{الگو}} متن"),
    ("<nowiki>''کج'' و &amp;</nowiki>", "''کج'' و &amp;"),
    ("[[کتاب]]<nowiki/>ها", "کتابها"),
])
def test_broken_markup_costs_only_itself(source, expected):
    assert wikitext.clean_wikitext(source) == expected


def page(title, text):
    return (f"<page><title>{title}</title><ns>0</ns><id>1</id><revision><id>2</id>"
            f'<text xml:space="preserve">{text}</text></revision></page>')


ARTICLE = "'''تهران''' پایتخت [[ایران]] است و بزرگ‌ترین شهر این کشور به شمار می‌آید. " * 3
LINKS = "'''مهر''' ممکن است به موارد زیر اشاره کند:\n" + "".join(
    f"* [[مهر ({meaning})]]، {meaning}\n" for meaning in ("ماه", "خورشید", "ایزد", "نشان", "محبت", "روزنامه"))


@pytest.mark.parametrize("marker", [
    "{{ابهام‌زدایی}}", "{{ابهام زدایی}}", "{{ابهام_زدایی}}", "{{ابهام‌زدایی|نام}}",
    "{{Disambig}}", "{{disambiguation}}", "__DISAMBIG__", "__ابهام‌زدایی__",
])
def test_disambiguation_pages_are_dropped_and_counted(tmp_path, marker):
    path = tmp_path / "dump.xml"
    path.write_text(f"<mediawiki>{page('تهران', ARTICLE)}{page('مهر', LINKS + marker)}</mediawiki>",
                    encoding="utf-8")
    report = prepare.new_report()
    documents = [document for _, _, document in prepare.read_documents(str(path), report, prepare.DEFAULTS)]
    assert [d.split("\n")[0] for d in documents] == ["تهران"]
    assert report["dropped"] == {"disambiguation": 1} and report["kept"] == 1


@pytest.mark.parametrize("text", [
    "{{ابهام‌زدایی دیگر|مهر (ماه)}}" + ARTICLE,  # a hatnote pointing to one: an article still
    "{{Disambig-cleanup}}" + ARTICLE,
])
def test_articles_that_mention_disambiguation_are_kept(tmp_path, text):
    path = tmp_path / "dump.xml"
    path.write_text(f"<mediawiki>{page('تهران', text)}</mediawiki>", encoding="utf-8")
    assert len(list(prepare.iter_documents(str(path)))) == 1
    assert wikitext.page_dropped_as(text) is None


@pytest.mark.parametrize("text, dropped_as", [
    ("#REDIRECT [[تهران]]", "redirect"),
    (" # redirect [[تهران]]", "redirect"),
    ("#تغییرمسیر [[تهران]]", "redirect"),
    ("#تغییر_مسیر [[تهران]]", "redirect"),
    ("#تغییر\u200cمسیر [[تهران]]", "redirect"),
    (LINKS + "{{ابهام‌زدایی}}", "disambiguation"),
    ("__DISAMBIG__\n" + LINKS, "disambiguation"),
    (ARTICLE + "\n#REDIRECT", None),  # only a page that starts with it is a redirect
    (ARTICLE, None),
])
def test_what_a_page_is_dropped_as(text, dropped_as):
    assert wikitext.page_dropped_as(text) == dropped_as


# Malformed markup repeated n times. The innermost-first rules peel a level of nesting per pass over
# the text, up to MAX_NESTING passes: on these the passes must stop by themselves, well before that
# cap, and not grow with n.
MALFORMED = {
    "unclosed templates": lambda n: "{{a|" * n + "متن",
    "unclosed links": lambda n: "[[" * n + "متن" + "]]" * 10,
    "unclosed tables": lambda n: "{|\n" * n + "متن",
    "nested deeper than MAX_NESTING": lambda n: "{{" * 50 + "x" + "}}" * 50 + "متن",
    "unclosed refs": lambda n: "<ref>" * n + "متن",
    "an external link's spaces": lambda n: "[http://example.com" + " " * n + "متن",
    "headings": lambda n: "== الف ==\n" * n + "متن",
    "single braces in a template": lambda n: "{{x|" + "{" * n + "متن",
    "balanced single braces in a template": lambda n: "{{x|" + "{1} " * n + "}}متن",
    "triple braces": lambda n: "{{{" * n + "متن",
    "bracketed words in a label": lambda n: "[[a|" + "[b] " * n + "]]متن",
    "single brackets in a label": lambda n: "[[a|" + "[" * n + "متن",
    "unclosed galleries": lambda n: "<gallery>\n" * n + "متن",
    "unclosed nowiki": lambda n: "<nowiki>" * n + "متن",
    "unclosed disambiguation templates": lambda n: "{{ابهام" * n + "متن",
}
NESTING_RULES = ("TEMPLATE_PARAMETER", "INNERMOST_TEMPLATE", "INNERMOST_TABLE", "PLAIN_LINK", "INNERMOST_LINK",
                 "EXTERNAL_LINK")


class CountedPattern:
    """A compiled pattern that counts the passes made with it (its subn calls) in `counts`."""

    def __init__(self, pattern, name, counts):
        self.pattern, self.name, self.counts = pattern, name, counts

    def subn(self, replacement, text):
        self.counts[self.name] += 1
        return self.pattern.subn(replacement, text)


@pytest.fixture
def passes(monkeypatch):
    """How many passes clean_wikitext makes with each of the innermost-first rules."""
    counts = Counter()
    for name in NESTING_RULES:
        monkeypatch.setattr(wikitext, name, CountedPattern(getattr(wikitext, name), name, counts))
    return counts


@pytest.mark.parametrize("malformed", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_takes_passes_bounded_whatever_its_size(passes, malformed):
    wikitext.clean_wikitext(malformed(10_000))
    passes_on_half = dict(passes)
    passes.clear()
    text = wikitext.clean_wikitext(malformed(20_000))
    assert dict(passes) == passes_on_half and set(passes) == set(NESTING_RULES)
    assert max(passes.values()) < wikitext.MAX_NESTING  # the passes stopped when nothing matched
    assert "{{" not in text and "[[" not in text and "{|" not in text
