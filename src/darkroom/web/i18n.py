"""Languages: English and Simplified Chinese, from a small catalogue.

The locale is chosen from (first match wins): the ``darkroom_lang`` cookie (set by the language
switch), the signed-in user's ``preferred_locale``, ``Accept-Language`` (any ``zh`` → zh-CN), and
finally ``DARKROOM_DEFAULT_LOCALE``. API error ``message``s are translated by ``code``; the codes
themselves never change.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

LOCALES = ("en", "zh-CN")
LANG_COOKIE = "darkroom_lang"

UI: dict[str, dict[str, str]] = {
    "en": {
        "app.name": "Darkroom",
        "app.tagline": "Your photos, your AI, your server.",
        "nav.studio": "Studio",
        "nav.credits": "Credits",
        "nav.login": "Log in",
        "nav.signup": "Sign up",
        "nav.logout": "Log out",
        "nav.language": "Language",
        "nav.switch": "中文",
        "nav.skip": "Skip to content",
        "auth.email": "E-mail",
        "auth.password": "Password",
        "auth.password_hint": "At least 8 characters.",
        "auth.login_title": "Log in",
        "auth.signup_title": "Create your account",
        "auth.signup_grant": "New accounts start with {credits} credits.",
        "auth.signup_grant.one": "New accounts start with {credits} credit.",
        "auth.login_button": "Log in",
        "auth.signup_button": "Sign up",
        "auth.no_account": "No account yet?",
        "auth.have_account": "Already have an account?",
        "upload.title": "Upload photos",
        "upload.drop": "Drag files here or click to choose",
        "upload.choose": "Choose image files",
        "upload.types": "JPEG, PNG or WebP",
        "upload.max_size": "Max: {mb} MB per file",
        "upload.max_files": "Max: {n} files",
        "upload.selected": "Selected files:",
        "upload.remove": "Remove {name}",
        "upload.errors": "These files were not added:",
        "upload.err_type": "{name}: not a JPEG, PNG or WebP image",
        "upload.err_size": "{name}: {size} MB is over the {mb} MB limit",
        "upload.err_count": "{name}: at most {n} files",
        "upload.err_empty": "{name}: the file is empty",
        "upload.err_dup": "{name}: already selected",
        "studio.operation": "Operation",
        "studio.parameters": "Parameters",
        "studio.price": "Price: {price} credits",
        "studio.price.one": "Price: {price} credit",
        "studio.balance": "Your balance: {balance} credits",
        "studio.balance.one": "Your balance: {balance} credit",
        "studio.submit": "Start task",
        "studio.submitting": "Uploading…",
        "studio.need_files": "Choose at least one image first.",
        "studio.not_enough": "Not enough credits: this needs {price}, you have {balance}.",
        "studio.created": "Task {taskNo} created.",
        "studio.unavailable": "not available on this server",
        "studio.style": "Style",
        "studio.yes": "Yes",
        "studio.no": "No",
        "tasks.title": "Your tasks ({n})",
        "tasks.empty_title": "No tasks yet",
        "tasks.empty": "Upload a photo and choose an operation to start.",
        "tasks.results": "Results:",
        "tasks.result": "Result {n}",
        "tasks.download": "Download",
        "tasks.download_n": "Download result {n}",
        "tasks.retry": "Retry",
        "tasks.cancel": "Cancel",
        "tasks.details": "Details",
        "tasks.error": "Error: {message}",
        "tasks.live": "Live updates",
        "tasks.polling": "Updating every 2 s",
        "tasks.more": "Older tasks",
        "tasks.newer": "Newer tasks",
        "status.pending": "Waiting",
        "status.processing": "Processing",
        "status.completed": "Done",
        "status.failed": "Failed",
        "status.canceled": "Canceled",
        "task.title": "Task {taskNo}",
        "task.compare": "Before / after",
        "task.compare_label": "Drag to compare the original and the result",
        "task.before": "Before",
        "task.after": "After",
        "task.type": "Operation",
        "task.status": "Status",
        "task.cost": "Cost",
        "task.created": "Created",
        "task.completed": "Finished",
        "task.parameters": "Parameters",
        "task.attempts": "Attempts",
        "task.inputs": "Originals",
        "task.back": "Back to the studio",
        "credits.title": "Credits",
        "credits.balance": "Balance",
        "credits.ledger": "History",
        "credits.date": "Date",
        "credits.type": "Type",
        "credits.amount": "Amount",
        "credits.after": "Balance after",
        "credits.no_change": "Balance unchanged: the credits were set aside when the task was submitted",
        "credits.description": "Description",
        "credits.empty": "No credit history yet.",
        "credits.prev": "Newer",
        "credits.next": "Older",
        "credits.page": "Page {page} of {pages}",
        "ledger.grant": "Grant",
        "ledger.reserve": "Reserved",
        "ledger.capture": "Charged",
        "ledger.release": "Refunded",
        "ledger.adjust": "Adjustment",
        "type.background_removal": "Background removal",
        "type.style_transfer": "Style transfer",
        "type.color_enhancement": "Colour enhancement",
        "type.text_to_image": "Text to image",
        "type.custom": "Custom prompt",
        "param.background": "Background",
        "param.post_process": "Clean mask edges",
        "param.strength": "Strength",
        "param.preserve_color": "Keep the original colours",
        "param.enhancement": "Enhancement",
        "param.style": "Style",
        "value.yes": "yes",
        "value.no": "no",
        "error.network": "The server could not be reached. Check your connection and try again.",
        "error.title": "Something went wrong",
    },
    "zh-CN": {
        "app.name": "Darkroom 暗房",
        "app.tagline": "你的照片，你的 AI，你的服务器。",
        "nav.studio": "工作室",
        "nav.credits": "积分",
        "nav.login": "登录",
        "nav.signup": "注册",
        "nav.logout": "退出登录",
        "nav.language": "语言",
        "nav.switch": "English",
        "nav.skip": "跳到正文",
        "auth.email": "邮箱",
        "auth.password": "密码",
        "auth.password_hint": "至少 8 个字符。",
        "auth.login_title": "登录",
        "auth.signup_title": "创建账户",
        "auth.signup_grant": "新账户赠送 {credits} 积分。",
        "auth.login_button": "登录",
        "auth.signup_button": "注册",
        "auth.no_account": "还没有账户？",
        "auth.have_account": "已有账户？",
        "upload.title": "上传图片",
        "upload.drop": "拖拽文件到这里或点击选择",
        "upload.choose": "选择图片文件",
        "upload.types": "JPEG、PNG 或 WebP",
        "upload.max_size": "最大: {mb}MB",
        "upload.max_files": "最多: {n}个文件",
        "upload.selected": "已选择的文件:",
        "upload.remove": "移除 {name}",
        "upload.errors": "以下文件未添加：",
        "upload.err_type": "{name}：不支持的文件类型（仅限 JPEG、PNG、WebP）",
        "upload.err_size": "{name}：{size}MB 超过了 {mb}MB 的上限",
        "upload.err_count": "{name}：最多只能选择 {n} 个文件",
        "upload.err_empty": "{name}：文件为空",
        "upload.err_dup": "{name}：已经选择过了",
        "studio.operation": "处理方式",
        "studio.parameters": "参数",
        "studio.price": "价格：{price} 积分",
        "studio.balance": "当前余额：{balance} 积分",
        "studio.submit": "开始处理",
        "studio.submitting": "正在上传…",
        "studio.need_files": "请上传至少一个文件。",
        "studio.not_enough": "积分不足，需要 {price} 积分，当前只有 {balance} 积分。",
        "studio.created": "任务 {taskNo} 创建成功。",
        "studio.unavailable": "本服务器不可用",
        "studio.style": "风格",
        "studio.yes": "是",
        "studio.no": "否",
        "tasks.title": "处理任务 ({n})",
        "tasks.empty_title": "暂无任务",
        "tasks.empty": "上传图片并选择处理方式，开始你的第一个 AI 处理任务。",
        "tasks.results": "处理结果:",
        "tasks.result": "结果 {n}",
        "tasks.download": "下载",
        "tasks.download_n": "下载结果 {n}",
        "tasks.retry": "重试",
        "tasks.cancel": "取消",
        "tasks.details": "详情",
        "tasks.error": "错误原因: {message}",
        "tasks.live": "实时更新",
        "tasks.polling": "每 2 秒刷新",
        "tasks.more": "更早的任务",
        "tasks.newer": "较新的任务",
        "status.pending": "等待处理",
        "status.processing": "正在处理",
        "status.completed": "处理完成",
        "status.failed": "处理失败",
        "status.canceled": "已取消",
        "task.title": "任务 {taskNo}",
        "task.compare": "处理前 / 处理后",
        "task.compare_label": "拖动滑块对比原图和结果",
        "task.before": "处理前",
        "task.after": "处理后",
        "task.type": "处理方式",
        "task.status": "状态",
        "task.cost": "费用",
        "task.created": "创建时间",
        "task.completed": "完成时间",
        "task.parameters": "参数",
        "task.attempts": "尝试记录",
        "task.inputs": "原图",
        "task.back": "返回工作室",
        "credits.title": "积分",
        "credits.balance": "余额",
        "credits.ledger": "积分记录",
        "credits.date": "日期",
        "credits.type": "类型",
        "credits.amount": "数量",
        "credits.after": "变动后余额",
        "credits.no_change": "余额未变：这些积分在创建任务时已预扣",
        "credits.description": "说明",
        "credits.empty": "暂无积分记录。",
        "credits.prev": "较新",
        "credits.next": "较早",
        "credits.page": "第 {page} / {pages} 页",
        "ledger.grant": "赠送",
        "ledger.reserve": "预扣",
        "ledger.capture": "扣除",
        "ledger.release": "退还",
        "ledger.adjust": "调整",
        "type.background_removal": "背景移除",
        "type.style_transfer": "风格迁移",
        "type.color_enhancement": "色彩增强",
        "type.text_to_image": "文字生成图片",
        "type.custom": "自定义提示词",
        "param.background": "背景",
        "param.post_process": "清理蒙版边缘",
        "param.strength": "强度",
        "param.preserve_color": "保留原图颜色",
        "param.enhancement": "增强方式",
        "param.style": "风格",
        "value.yes": "是",
        "value.no": "否",
        "error.network": "无法连接服务器，请检查网络后重试。",
        "error.title": "出错了",
    },
}

# Chinese messages for API error codes (the English ones come from the code that raised them).
ERRORS_ZH: dict[str, str] = {
    "unauthorized": "请先登录。",
    "invalid_token": "登录凭证无效，请重新登录。",
    "token_expired": "登录已过期，请重新登录。",
    "token_revoked": "你已退出登录，请重新登录。",
    "invalid_credentials": "邮箱或密码不正确。",
    "forbidden": "没有权限执行此操作。",
    "signup_closed": "本服务器已关闭注册。",
    "csrf_failed": "表单已过期或并非来自本站，请刷新页面后重试。",
    "insufficient_credits": "积分不足。",
    "not_found": "找不到请求的内容。",
    "task_not_found": "任务不存在或无权访问。",
    "file_not_found": "链接无效或已过期，请刷新页面。",
    "user_not_found": "用户不存在。",
    "email_taken": "该邮箱已被注册。",
    "username_taken": "该用户名已被使用。",
    "task_not_retryable": "只能重试失败的任务。",
    "retry_limit_reached": "重试次数已达上限。",
    "task_not_cancelable": "只能取消等待中或处理中的任务。",
    "file_too_large": "文件太大。",
    "request_too_large": "请求太大。",
    "unsupported_image_type": "不支持的文件类型（仅限 JPEG、PNG、WebP）。",
    "validation_error": "请求内容无效。",
    "no_files": "请上传至少一个文件。",
    "too_many_files": "文件数量超过上限。",
    "empty_file": "文件为空。",
    "corrupt_image": "图片已损坏，无法读取。",
    "image_too_large": "图片像素过多。",
    "unknown_task_type": "未知的任务类型。",
    "task_type_unavailable": "本服务器暂不支持该任务类型。",
    "invalid_parameters": "参数必须是 JSON 对象。",
    "invalid_parameter": "参数无效。",
    "service_unavailable": "服务暂时不可用，请稍后再试。",
    "internal_error": "服务器内部错误。",
    # task failures (errorCode of a failed task)
    "invalid_input": "输入图片无法处理。",
    "content_filtered": "内容被安全过滤拦截。",
    "rate_limited": "请求过于频繁，请稍后再试。",
    "provider_unavailable": "AI 服务暂时不可用。",
    "timeout": "处理超时。",
    "provider_error": "AI 处理失败。",
    "input_missing": "输入文件丢失。",
    "worker_lost": "处理进程多次中断，任务已放弃。",
}


# Names of parameter values (built-in styles, enhancements, backgrounds) shown on the pages.
# The API keeps the English identifiers; English pages show them with spaces for underscores.
VALUE_NAMES_ZH: dict[str, str] = {
    "value.background.transparent": "透明",
    "value.background.white": "白色",
    "value.enhancement.auto": "自动",
    "value.enhancement.vivid": "鲜艳",
    "value.enhancement.warm": "暖色调",
    "value.enhancement.cool": "冷色调",
    "value.enhancement.black_and_white": "黑白",
    "value.enhancement.vintage": "复古",
    "value.enhancement.high_contrast": "高对比度",
    "value.style.ochre_crosshatch": "赭石交叉线",
    "value.style.bold_brushwork": "粗犷笔触",
    "value.style.charcoal_sketch": "炭笔素描",
    "value.style.abstract_swirls": "抽象漩涡",
    "value.style.crimson_etching": "绯红蚀刻",
    "value.style.ember_feathers": "余烬羽毛",
    "value.style.indigo_pebbles": "靛蓝卵石",
    "value.style.fauvist_night": "野兽派之夜",
    "value.style.colored_pencil": "彩色铅笔",
    "value.style.teal_textile": "青绿织物",
    "value.style.rust_oil": "铁锈色油画",
    "value.style.golden_engraving": "金色版画",
    "value.style.lavender_watercolor": "薰衣草水彩",
    "value.style.green_expressionist": "绿色表现主义",
    "value.style.frosted_blue": "霜蓝",
    "value.style.stained_glass": "彩绘玻璃",
    "value.style.cobalt_pastel": "钴蓝粉彩",
    "value.style.geometric_blocks": "几何色块",
    "value.style.sepia_woodgrain": "棕褐木纹",
    "value.style.blue_impasto": "蓝色厚涂",
    "value.style.scarlet_shards": "猩红碎片",
    "value.style.pastel_pop": "粉彩波普",
    "value.style.periwinkle_woodcut": "长春花蓝木刻",
    "value.style.moody_dusk": "暮色氛围",
    "value.style.blue_mosaic": "蓝色马赛克",
    "value.style.twilight_tapestry": "暮光挂毯",
}
UI["zh-CN"].update(VALUE_NAMES_ZH)
UI["en"].update({key: key.rsplit(".", 1)[1].replace("_", " ").capitalize() for key in VALUE_NAMES_ZH})


def value_name(locale: str, param: str, value: object) -> str:
    """A parameter value as a page shows it: its name in ``locale``, else the identifier."""
    key = f"value.{param}.{value}"
    named = UI.get(locale, {}).get(key)
    return named if named is not None else str(value).replace("_", " ")


def parameter_text(locale: str, param: str, value: object) -> str:
    """``label: value`` for a task's parameter on the task page."""
    label = UI.get(locale, UI["en"]).get(f"param.{param}") or param.replace("_", " ")
    if isinstance(value, bool):
        shown = translate(locale, "value.yes" if value else "value.no")
    else:
        shown = value_name(locale, param, value)
    return f"{label}: {shown}"


def normalise(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().lower()
    if value.startswith("zh"):
        return "zh-CN"
    if value.startswith("en"):
        return "en"
    return None


def from_accept_language(header: str | None) -> str | None:
    """The best of our locales in an ``Accept-Language`` header, honouring q-values."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        lang, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        locale = normalise(lang)
        if locale and q > 0:
            ranked.append((-q, index, locale))
    return min(ranked)[2] if ranked else None


def choose(request: Request, default: str, user_locale: str | None = None) -> str:
    return (
        normalise(request.cookies.get(LANG_COOKIE))
        or normalise(user_locale)
        or from_accept_language(request.headers.get("accept-language"))
        or default
    )


def translate(locale: str, key: str, **values: Any) -> str:
    """``key``'s text in ``locale`` (English if it has none), with ``values`` filled in. With
    ``count=1`` the key's ``.one`` variant is used where the language has one ("1 credit")."""
    table = UI.get(locale, UI["en"])
    if key not in table:
        table = UI["en"]
    text = (table.get(key + ".one") if values.get("count") == 1 else None) or table.get(key) or key
    return text.format(**values) if values else text


# With the details an error carries (DarkroomError.extra), when it has them all.
ERRORS_ZH_DETAILED: dict[str, str] = {
    "insufficient_credits": "积分不足，需要 {needed} 积分，当前只有 {balance} 积分。",
}


def error_message(locale: str, code: str, message: str, extra: dict[str, Any] | None = None) -> str:
    """The message of an API error in ``locale``; the English original when there is no entry."""
    if locale != "zh-CN":
        return message
    detailed = ERRORS_ZH_DETAILED.get(code)
    if detailed is not None and extra:
        try:
            return detailed.format(**extra)
        except (KeyError, IndexError):
            pass
    return ERRORS_ZH.get(code, message)


# Ledger descriptions are written in English by the credits service (the ledger is an audit
# record and is never rewritten); pages show the ones it writes in the reader's language.
# Anything else (an operator's own text from `darkroom credits grant`) is shown as written.
_LEDGER_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"Reserved for task (?P<task>\S+) \(attempt (?P<attempt>\d+)\)"), "ledger.text.reserve"),
    (
        re.compile(r"Charged (?P<amount>\d+) for task (?P<task>\S+) \(attempt (?P<attempt>\d+)\)"),
        "ledger.text.capture",
    ),
    (
        re.compile(r"Refunded for task (?P<task>\S+) \(attempt (?P<attempt>\d+)\): (?P<why>[a-z_]+)"),
        "ledger.text.release",
    ),
    (re.compile(r"Sign-up grant"), "ledger.text.signup"),
    (re.compile(r"Initial credits \(darkroom users create\)"), "ledger.text.initial"),
]

_LEDGER_TEXT: dict[str, dict[str, str]] = {
    "zh-CN": {
        "ledger.text.reserve": "为任务 {task} 预扣（第 {attempt} 次尝试）",
        "ledger.text.capture": "任务 {task} 扣除 {amount} 积分（第 {attempt} 次尝试）",
        "ledger.text.release": "任务 {task} 退还（第 {attempt} 次尝试）：{why}",
        "ledger.text.signup": "注册赠送",
        "ledger.text.initial": "初始积分（由管理员创建账户时发放）",
    },
}


def ledger_description(locale: str, description: str | None) -> str:
    """A ledger entry's description in ``locale`` when the service wrote it, else as stored."""
    text = description or ""
    table = _LEDGER_TEXT.get(locale)
    if table is None:
        return text
    for pattern, key in _LEDGER_PATTERNS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        values = match.groupdict()
        if "why" in values:
            why = values["why"]
            values["why"] = UI[locale]["status.canceled"] if why == "canceled" else ERRORS_ZH.get(why, why)
        return table[key].format(**values)
    return text
