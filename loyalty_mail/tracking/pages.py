"""The pages a member sees from a link in an email: leave one topic (or all email), the
preference centre, and the confirmation of an address (double opt-in). Plain HTML forms in the member's language (vi, en): no JavaScript, every form
carries a signed form token, and nothing here reads or writes the database.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from starlette.responses import HTMLResponse

from ..config import Topic

NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache",
            "Expires": "0"}

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "unsubscribe": "Unsubscribe", "preferences": "Email preferences",
        "ask": "Stop receiving email from {program} at {email}?",
        "button": "Unsubscribe",
        "done": "You are unsubscribed. {program} will not send you email at {email} any more.",
        "leave_ask": "Stop receiving {topic} email from {program} at {email}?",
        "leave_button": "Unsubscribe from {topic}",
        "left": "You will no longer get {topic} email from {program} at {email}.",
        "more": "More choices, or unsubscribe from all email",
        "intro": "Choose what {program} sends to {email}.",
        "topics": "Topics", "pause": "Pause",
        "keep": "Keep sending email", "pause_30": "Pause all email for 30 days",
        "pause_90": "Pause all email for 90 days", "paused": "All email is paused until {date}.",
        "resume": "Resume email now", "keep_paused": "Stay paused",
        "save": "Save preferences", "saved": "Your preferences are saved.",
        "all_button": "Unsubscribe from all email",
        "expired": "This form has expired or did not come from this page. Open the page again and retry.",
        "unknown": "This link is not valid.",
        "too_many": "This form has too many fields. Open the page again and retry.",
        "unreadable": "This form could not be read. Open the page again and retry.",
        "bad_choice": "This form asks for a choice the page does not offer. Open the page again and retry.",
        "confirm": "Confirm your email address",
        "confirm_ask": "Confirm that {email} is yours and that you want email from {program}.",
        "confirm_button": "Confirm", "confirmed": "Thank you: {email} is confirmed.",
    },
    "vi": {
        "unsubscribe": "Hủy đăng ký", "preferences": "Tùy chọn email",
        "ask": "Ngừng nhận email từ {program} tại {email}?",
        "button": "Hủy đăng ký",
        "done": "Bạn đã hủy đăng ký. {program} sẽ không gửi email đến {email} nữa.",
        "leave_ask": "Ngừng nhận email {topic} từ {program} tại {email}?",
        "leave_button": "Hủy đăng ký {topic}",
        "left": "Bạn sẽ không nhận email {topic} từ {program} tại {email} nữa.",
        "more": "Thêm lựa chọn, hoặc hủy đăng ký mọi email",
        "intro": "Chọn những email {program} gửi đến {email}.",
        "topics": "Chủ đề", "pause": "Tạm dừng",
        "keep": "Tiếp tục nhận email", "pause_30": "Tạm dừng mọi email trong 30 ngày",
        "pause_90": "Tạm dừng mọi email trong 90 ngày", "paused": "Mọi email đang tạm dừng đến {date}.",
        "resume": "Nhận email lại ngay", "keep_paused": "Tiếp tục tạm dừng",
        "save": "Lưu tùy chọn", "saved": "Đã lưu tùy chọn của bạn.",
        "all_button": "Hủy đăng ký mọi email",
        "expired": "Biểu mẫu đã hết hạn hoặc không đến từ trang này. Hãy mở lại trang và thử lại.",
        "unknown": "Liên kết này không hợp lệ.",
        "too_many": "Biểu mẫu này có quá nhiều trường. Hãy mở lại trang và thử lại.",
        "unreadable": "Không đọc được biểu mẫu này. Hãy mở lại trang và thử lại.",
        "bad_choice": "Biểu mẫu này yêu cầu một lựa chọn mà trang không có. Hãy mở lại trang và thử lại.",
        "confirm": "Xác nhận địa chỉ email",
        "confirm_ask": "Xác nhận {email} là của bạn và bạn muốn nhận email từ {program}.",
        "confirm_button": "Xác nhận", "confirmed": "Cảm ơn bạn: {email} đã được xác nhận.",
    },
}

STYLE = ("body{font-family:Arial,sans-serif;max-width:520px;margin:40px auto;padding:0 16px;color:#222}"
         "fieldset{border:1px solid #ccc;border-radius:6px;margin:16px 0;padding:8px 16px}"
         "label{display:block;padding:8px 0;font-size:16px}small{display:block;color:#666;margin-left:26px}"
         "button{padding:12px 24px;font-size:16px;margin:8px 0}.note{background:#eef7ee;padding:8px 12px}"
         ".link{background:none;border:none;color:#a00;text-decoration:underline;padding:0}")


def language(locale: str | None) -> str:
    code = (locale or "").split("_")[0].split("-")[0]
    return code if code in TEXTS else "en"


@dataclass(frozen=True)
class Page:
    """One page in one language; `say` formats a text with the page's names, escaped."""

    locale: str | None
    program: str
    email: str = ""

    @property
    def texts(self) -> dict[str, str]:
        return TEXTS[language(self.locale)]

    def say(self, key: str, **more: str) -> str:
        return html.escape(self.texts[key].format(program=self.program, email=self.email, **more))

    def response(self, title_key: str, body: str, status: int = 200) -> HTMLResponse:
        title = html.escape(self.texts[title_key])
        page = (f'<!DOCTYPE html><html lang="{language(self.locale)}"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title>'
                f'<meta name="robots" content="noindex"><style>{STYLE}</style></head>'
                f'<body><h1>{title}</h1>{body}</body></html>')
        return HTMLResponse(page, status_code=status, headers=NO_CACHE)

    def message(self, title_key: str, key: str, status: int = 200, **more: str) -> HTMLResponse:
        return self.response(title_key, f"<p>{self.say(key, **more)}</p>", status)


def _hidden(form_token: str) -> str:
    return f'<input type="hidden" name="form" value="{html.escape(form_token)}">'


def unsubscribe_page(page: Page, action: str, form_token: str, topic_label: str | None,
                     preferences_url: str | None) -> HTMLResponse:
    """Leave the email's topic (or all email when it has none); with a topic, also a button to
    leave all email, and a link to the preferences."""
    if topic_label is None:
        ask, button, value = page.say("ask"), page.say("button"), "all"
    else:
        ask, button, value = page.say("leave_ask", topic=topic_label), page.say("leave_button", topic=topic_label), "topic"
    every = (f'<button class="link" type="submit" name="leave" value="all">{page.say("all_button")}</button>'
             if topic_label is not None else "")
    more = (f'<p><a href="{html.escape(preferences_url)}">{page.say("more")}</a></p>'
            if preferences_url else "")
    body = (f'<p>{ask}</p><form method="post" action="{html.escape(action)}">{_hidden(form_token)}'
            f'<button type="submit" name="leave" value="{value}">{button}</button><br>{every}</form>{more}')
    return page.response("unsubscribe", body)


def confirm_page(page: Page, action: str, form_token: str) -> HTMLResponse:
    """Double opt-in: one button; following the link alone confirms nothing (scanners follow it)."""
    body = (f'<p>{page.say("confirm_ask")}</p><form method="post" action="{html.escape(action)}">'
            f'{_hidden(form_token)}<button type="submit">{page.say("confirm_button")}</button></form>')
    return page.response("confirm", body)


def preferences_page(page: Page, action: str, form_token: str, topics: tuple[Topic, ...],
                     chosen: Mapping[str, bool], paused_until: datetime | None, default_locale: str,
                     note: str | None = None) -> HTMLResponse:
    """The preference centre: topics on and off, a pause, and unsubscribe from all email."""
    locale = page.locale or default_locale
    parts = [f'<p class="note" role="status">{page.say(note)}</p>' if note else "",
             f"<p>{page.say('intro')}</p>",
             f'<form method="post" action="{html.escape(action)}">{_hidden(form_token)}']
    if topics:
        parts.append(f"<fieldset><legend>{page.say('topics')}</legend>")
        for topic in topics:
            checked = " checked" if chosen.get(topic.name) else ""
            label = html.escape(topic.label_for(locale, default_locale))
            about = topic.description_for(locale, default_locale)
            parts.append(f'<label><input type="checkbox" name="topic" value="{html.escape(topic.name)}"'
                         f'{checked}> {label}</label>'
                         + (f"<small>{html.escape(about)}</small>" if about else ""))
        parts.append("</fieldset>")
    parts.append(f"<fieldset><legend>{page.say('pause')}</legend>")
    if paused_until is not None:
        parts.append(f"<p>{page.say('paused', date=f'{paused_until:%Y-%m-%d}')}</p>")
        choices = [("keep", "keep_paused"), ("resume", "resume")]
    else:
        choices = [("keep", "keep"), ("30", "pause_30"), ("90", "pause_90")]
    for index, (value, key) in enumerate(choices):
        checked = " checked" if index == 0 else ""
        parts.append(f'<label><input type="radio" name="pause" value="{value}"{checked}> {page.say(key)}</label>')
    parts.append(f'</fieldset><button type="submit" name="do" value="save">{page.say("save")}</button></form>')
    parts.append(f'<form method="post" action="{html.escape(action)}">{_hidden(form_token)}'
                 f'<button class="link" type="submit" name="do" value="unsubscribe_all">'
                 f'{page.say("all_button")}</button></form>')
    return page.response("preferences", "".join(parts))
