"""The canonical data model: six tables, their columns, types and rules, as data.

Ingestion validates every input row against these definitions (``shoplens.ingest``), the
store creates its tables from them (``shoplens.store``) and ``docs/data-model.md``
documents them column by column (a test keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColumnType = Literal["id", "string", "int", "money", "float", "timestamp", "date", "enum", "text"]

DUCKDB_TYPES: dict[str, str] = {
    "id": "VARCHAR",
    "string": "VARCHAR",
    "text": "VARCHAR",
    "enum": "VARCHAR",
    "int": "BIGINT",
    "money": "DECIMAL(18,2)",
    "float": "DOUBLE",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
}

EXPECTED_WORDS: dict[str, str] = {
    "id": "a non-empty identifier",
    "string": "text",
    "text": "non-empty text",
    "enum": "one of",
    "int": "an integer",
    "money": "a number (currency symbols and thousands separators allowed)",
    "float": "a number",
    "timestamp": "a date/time",
    "date": "a date (YYYY-MM-DD, YYYY/MM/DD, YYYYMMDD or YYYY年MM月DD日)",
}


@dataclass(frozen=True)
class Column:
    """One canonical column and the rules a value must pass to be stored."""

    name: str
    type: ColumnType
    doc: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    # enum: canonical value -> accepted spellings (lower-cased, trimmed), canonical included
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default: str | None = None  # SQL literal used when the source omits the column
    pii: bool = False  # direct personal data: encrypted or dropped at ingest, never analysed
    pii_default: Literal["encrypt", "drop"] = "encrypt"  # pii: the action when [privacy] pii names none
    pseudonymise: bool = False  # identifier replaced by a keyed HMAC at ingest
    references: str | None = None  # "table.column" foreign key; unknown values are orphans
    redact_subject: bool = False  # free text: the row's own raw customer id becomes SUBJECT_PLACEHOLDER
    earliest: str | None = None  # date: the earliest accepted day (the latest is today)
    derived_from: str | None = None  # computed from this column of the row when the source has none
    # identifier kind (phone, email, address, device, payment): a keyed hash of the normalised
    # value goes to ``customer_links`` at ingest, so accounts sharing it can be linked
    # without the value itself being kept (docs/risk.md)
    link: str | None = None


@dataclass(frozen=True)
class Table:
    """One canonical table: columns, primary key and documentation."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def subject(self) -> Column | None:
        """The column naming the customer a row is about (checked against erased customers)."""
        names = {c.name: c for c in self.columns}
        col = names.get(SUBJECT_COLUMN)
        return col if col is not None and col.pseudonymise else None

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def stored_columns(self) -> list[Column]:
        """Columns kept in the analysis table (direct PII lives only in the vault)."""
        return [c for c in self.columns if not c.pii]


# the customer a row is about; its raw value is pseudonymised, looked up in the erased
# customers' suppression list and replaced by the placeholder inside the row's free text
SUBJECT_COLUMN = "customer_id"
SUBJECT_PLACEHOLDER = "[ID]"
SUBJECT_MIN_CHARS = 3  # shorter raw ids ("7") are too common inside ordinary text to replace

GENDERS = {
    "female": ("female", "f", "女", "女性", "w", "woman"),
    "male": ("male", "m", "男", "男性", "man"),
    "other": ("other", "o", "其他", "nonbinary", "non-binary", "x"),
    "unknown": ("unknown", "u", "未知", "保密", "n/a", "na"),
}
ORDER_STATUSES = {
    "paid": ("paid", "completed", "complete", "delivered", "shipped", "已支付", "已完成", "交易成功", "已发货",
             "已付款", "已签收", "待发货", "待收货", "交易完成"),
    "cancelled": ("cancelled", "canceled", "cancel", "已取消", "交易关闭", "取消", "已关闭"),
    "returned": ("returned", "refunded", "return", "refund", "退货", "已退款", "退款成功", "已退货", "退款中",
                 "退货退款", "已退货退款", "退款完成"),
}
EVENT_TYPES = {
    "view": ("view", "pv", "page_view", "浏览", "detail"),
    "search": ("search", "搜索", "query"),
    "cart": ("cart", "add_to_cart", "addtocart", "加购", "加入购物车"),
    "favorite": ("favorite", "fav", "like", "收藏", "wishlist"),
    "click": ("click", "点击"),
    "share": ("share", "分享"),
    "rate": ("rate", "rating", "评分"),
    "purchase": ("purchase", "buy", "购买", "transaction"),
}
TEXT_KINDS = {
    "review": ("review", "评价", "评论", "comment"),
    "chat": ("chat", "客服", "im", "service"),
    "post": ("post", "social", "帖子", "晒单"),
    "search": ("search", "query", "搜索"),
}
# what a customer may consent to (docs/consent.md): each purpose with the channels it
# is given per; "any" covers every channel of the purpose
CONSENT_PURPOSES = {
    "profiling": ("profiling", "analytics", "用户画像", "画像", "分析"),
    "personalisation": ("personalisation", "personalization", "recommendations", "个性化", "个性化推荐", "推荐"),
    "marketing": ("marketing", "营销", "营销推送", "direct_marketing"),
    "sharing": ("sharing", "third_party", "third-party", "第三方共享", "共享"),
}
CONSENT_CHANNELS = {
    "any": ("any", "all", "*", "全部", "所有"),
    "sms": ("sms", "短信", "text_message"),
    "email": ("email", "e-mail", "mail", "邮件", "电子邮件"),
    "push": ("push", "app_push", "推送", "app推送"),
    "phone": ("phone", "call", "telephone", "电话", "外呼"),
    "ads": ("ads", "ad_platforms", "advertising", "广告", "广告平台"),
    "export": ("export", "exports", "data_export", "导出"),
}
CONSENT_STATUSES = {
    "granted": ("granted", "grant", "yes", "y", "true", "1", "opt_in", "opt-in", "optin", "同意", "授权", "已授权"),
    "withdrawn": ("withdrawn", "withdraw", "revoked", "denied", "no", "n", "false", "0", "opt_out", "opt-out", "optout",
                  "撤回", "拒绝", "不同意", "已撤回"),
}

CUSTOMERS = Table(
    name="customers",
    doc="One row per customer. Direct PII is encrypted into the vault or dropped at ingest.",
    key=("customer_id",),
    columns=(
        Column("customer_id", "id", "Customer identifier; stored as a keyed HMAC pseudonym.", required=True, pseudonymise=True),
        Column("signup_at", "timestamp", "Account creation time (shop local time)."),
        Column("gender", "enum", "female / male / other / unknown.", values=GENDERS, default="'unknown'"),
        Column("birth_year", "int", "Year of birth (age is derived); taken from birth_date when the source has only that.",
               minimum=1900, maximum=2030, derived_from="birth_date"),
        Column("birth_date", "date", "Full birth date. PII: only its year is analysed (birth_year); the date is dropped "
               "or encrypted into the vault.", pii=True, pii_default="drop", earliest="1900-01-01"),
        Column("city", "string", "City (coarse location; street addresses are PII)."),
        Column("region", "string", "Province / state / region."),
        Column("country", "string", "Country code or name."),
        Column("channel", "string", "Acquisition channel (app, web, mini-program, store ...)."),
        Column("name", "string", "Full name. PII.", pii=True),
        Column("phone", "string", "Phone number. PII; a keyed hash links accounts sharing it.", pii=True, link="phone"),
        Column("email", "string", "E-mail address. PII; a keyed hash links accounts sharing it.", pii=True, link="email"),
        Column("address", "string", "Postal address. PII; a keyed hash links accounts sharing it.", pii=True,
               link="address"),
        Column("id_number", "string", "National ID / passport number. PII.", pii=True),
    ),
)

PRODUCTS = Table(
    name="products",
    doc="Catalogue. `category` is a path whose levels are separated by '/' or '>'.",
    key=("product_id",),
    columns=(
        Column("product_id", "id", "Product identifier (SKU or SPU).", required=True),
        Column("name", "string", "Product title."),
        Column("category", "string", "Category path, e.g. '服装/女装/连衣裙' or 'Electronics > Phones'.", default="'unknown'"),
        Column("brand", "string", "Brand."),
        Column("price", "money", "List price.", minimum=0),
    ),
)

ORDERS = Table(
    name="orders",
    doc="One row per order. Amounts are what the customer paid, after discount.",
    key=("order_id",),
    columns=(
        Column("order_id", "id", "Order identifier.", required=True),
        Column("customer_id", "id", "Buyer; must exist in customers.", required=True, pseudonymise=True, references="customers.customer_id"),
        Column("order_ts", "timestamp", "Order time (shop local time).", required=True),
        Column("status", "enum", "paid / cancelled / returned.", values=ORDER_STATUSES, default="'paid'"),
        Column("amount", "money", "Amount paid after discount, converted to the base currency.", required=True, minimum=0),
        Column("discount", "money", "Discount granted on the order, in the base currency.", minimum=0, default="0"),
        Column("currency", "string", "ISO 4217 code the source used; must be the base currency or have a rate in [defaults] fx_rates."),
        Column("channel", "string", "Sales channel."),
        Column("shipping_address", "string", "Delivery address. PII, never stored: only a keyed hash links "
               "accounts shipping to it.", pii=True, pii_default="drop", link="address"),
        Column("device_id", "string", "Device or browser fingerprint the order came from. Never stored: only a "
               "keyed hash links accounts sharing it.", pii=True, pii_default="drop", link="device"),
        Column("payment_ref", "string", "Payment instrument token (a card fingerprint, never a card number). Never "
               "stored: only a keyed hash links accounts paying with it.", pii=True, pii_default="drop",
               link="payment"),
    ),
)

ORDER_ITEMS = Table(
    name="order_items",
    doc="Order lines. Category spend shares are computed from these.",
    key=("order_id", "line_no"),
    columns=(
        Column("order_id", "id", "Order; must exist in orders.", required=True, references="orders.order_id"),
        Column("line_no", "int", "Line number within the order (1, 2, ...).", required=True, minimum=1),
        Column("product_id", "id", "Product; must exist in products.", required=True, references="products.product_id"),
        Column("quantity", "int", "Units bought.", minimum=1, default="1"),
        Column("unit_price", "money", "Price per unit actually paid.", required=True, minimum=0),
        Column("discount", "money", "Discount on this line.", minimum=0, default="0"),
    ),
)

EVENTS = Table(
    name="events",
    doc="Behavioural events: views, searches, cart adds, favourites, ratings ...",
    key=("event_id",),
    columns=(
        Column("event_id", "id", "Event identifier; derived from source and row when absent.", required=True),
        Column("customer_id", "id", "Actor; must exist in customers.", required=True, pseudonymise=True, references="customers.customer_id"),
        Column("event_ts", "timestamp", "Event time (shop local time).", required=True),
        Column("event_type", "enum", "view / search / cart / favorite / click / share / rate / purchase.", required=True, values=EVENT_TYPES),
        Column("product_id", "id", "Product involved, if any; must exist in products.", references="products.product_id"),
        Column("query", "text", "Search query text (PII-masked; the actor's own id becomes [ID]).", redact_subject=True),
        Column("session_id", "string", "Session identifier; stored as a keyed HMAC pseudonym (shops often build it "
               "from the customer id).", pseudonymise=True),
        Column("value", "float", "Numeric payload, e.g. a rating or dwell seconds."),
    ),
)

TEXTS = Table(
    name="texts",
    doc="Customers' own words. `text` holds the PII-masked analysis copy; the raw text is encrypted into the vault or dropped.",
    key=("text_id",),
    columns=(
        Column("text_id", "id", "Text identifier.", required=True),
        Column("customer_id", "id", "Author; must exist in customers.", required=True, pseudonymise=True, references="customers.customer_id"),
        Column("kind", "enum", "review / chat / post / search.", values=TEXT_KINDS, default="'review'"),
        Column("product_id", "id", "Product the text is about, if any.", references="products.product_id"),
        Column("order_id", "id", "Order the text is about, if any.", references="orders.order_id"),
        Column("rating", "int", "Star rating 1-5, if any.", minimum=1, maximum=5),
        Column("text", "text", "The text, PII-masked ([PHONE], [EMAIL], [ID], [CARD]); the author's own id becomes [ID].",
               required=True, redact_subject=True),
        Column("language", "string", "ISO 639-1 code; detected (zh / en / und) when absent."),
        Column("created_at", "timestamp", "When it was written (shop local time).", required=True),
    ),
)

CONSENTS = Table(
    name="consents",
    doc="Consent records: each time a customer granted or withdrew a purpose (on a channel). The latest record "
        "for a purpose and channel decides; without one, [consent] defaults apply (docs/consent.md).",
    key=("customer_id", "purpose", "channel", "consent_ts"),
    columns=(
        Column("customer_id", "id", "Customer; must exist in customers.", required=True, pseudonymise=True,
               references="customers.customer_id"),
        Column("purpose", "enum", "profiling / personalisation / marketing / sharing.", required=True,
               values=CONSENT_PURPOSES),
        Column("channel", "enum", "any / sms / email / push / phone (marketing), ads / export (sharing).",
               values=CONSENT_CHANNELS, default="'any'"),
        Column("status", "enum", "granted / withdrawn.", required=True, values=CONSENT_STATUSES),
        Column("consent_ts", "timestamp", "When the customer gave or withdrew it (shop local time).", required=True),
        Column("source", "string", "Where it was recorded (checkout form, app settings, API ...)."),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t for t in (CUSTOMERS, PRODUCTS, ORDERS, ORDER_ITEMS, EVENTS, TEXTS, CONSENTS)
}
# parents before children, so foreign keys can be checked as each file is ingested
INGEST_ORDER: tuple[str, ...] = ("customers", "products", "orders", "order_items", "events", "texts", "consents")
LINEAGE_COLUMNS = ("_ingest_id", "_line", "_row_hash")
# direct personal data, by column name: what [privacy] pii may name
PII_COLUMNS: dict[str, Column] = {c.name: c for t in TABLES.values() for c in t.columns if c.pii}
# PII the vault can keep encrypted (the customers table's); any other PII column is dropped
VAULT_COLUMNS = frozenset(c.name for c in TABLES["customers"].columns if c.pii)


def table(name: str) -> Table:
    """Return the canonical table called ``name`` or raise a clear error.

    >>> table("orders").key
    ('order_id',)
    """
    from shoplens.errors import ConfigError

    try:
        return TABLES[name]
    except KeyError:
        raise ConfigError(
            f"unknown table '{name}': expected one of {', '.join(INGEST_ORDER)}"
        ) from None
