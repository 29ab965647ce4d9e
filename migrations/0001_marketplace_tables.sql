-- Marketplace tables erp-sync relies on. The marketplace owns them; they are created here
-- only when absent so that erp-sync can run (and be tested) against an empty database.

CREATE TABLE IF NOT EXISTS orders (
    id             uuid PRIMARY KEY,
    vendor_id      varchar(100)  NOT NULL,
    status         varchar(20)   NOT NULL DEFAULT 'pending',
    total_amount   numeric(12,2) NOT NULL DEFAULT 0,
    currency       char(3)       NOT NULL DEFAULT 'EUR',
    delivery_date  date,
    notes          text,
    erp_reference  varchar(100),
    created_at     timestamptz   NOT NULL DEFAULT now(),
    updated_at     timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_orders_vendor ON orders (vendor_id);

CREATE TABLE IF NOT EXISTS order_lines (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id    uuid          NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    sku         varchar(100)  NOT NULL,
    quantity    numeric(12,3) NOT NULL,
    unit_price  numeric(12,4) NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_order_lines_order ON order_lines (order_id);

-- Catalogue as pushed by the vendors' ERPs. ERP codes are kept beside the mapped
-- marketplace ("resto") codes so a mapping change can be replayed without the ERP.
CREATE TABLE IF NOT EXISTS items (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vendor_id             varchar(100)  NOT NULL,
    sku                   varchar(100)  NOT NULL,
    name                  varchar(255)  NOT NULL,
    description           text,
    erp_unit_code         varchar(100)  NOT NULL,
    erp_vat_code          varchar(100)  NOT NULL,
    erp_family_code       varchar(100),
    erp_subfamily_code    varchar(100),
    unit_code             varchar(100)  NOT NULL,
    vat_code              varchar(100)  NOT NULL,
    family_code           varchar(100),
    subfamily_code        varchar(100),
    price                 numeric(12,4) NOT NULL,
    is_active             boolean       NOT NULL DEFAULT true,
    content_hash          varchar(128)  NOT NULL,
    erp_updated_at        timestamptz   NOT NULL,
    last_synced_at        timestamptz   NOT NULL DEFAULT now(),
    created_at            timestamptz   NOT NULL DEFAULT now(),
    updated_at            timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT items_vendor_sku_key UNIQUE (vendor_id, sku)
);

CREATE TABLE IF NOT EXISTS warehouses (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vendor_id         varchar(100) NOT NULL,
    erp_warehouse_id  varchar(100) NOT NULL,
    name              varchar(255) NOT NULL,
    address           text,
    is_active         boolean      NOT NULL DEFAULT true,
    content_hash      varchar(128) NOT NULL,
    erp_updated_at    timestamptz  NOT NULL,
    last_synced_at    timestamptz  NOT NULL DEFAULT now(),
    created_at        timestamptz  NOT NULL DEFAULT now(),
    updated_at        timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT warehouses_vendor_erp_id_key UNIQUE (vendor_id, erp_warehouse_id)
);

CREATE TABLE IF NOT EXISTS stock (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vendor_id          varchar(100)  NOT NULL,
    warehouse_id       uuid          NOT NULL REFERENCES warehouses (id) ON DELETE CASCADE,
    item_id            uuid          NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    quantity           numeric(14,3) NOT NULL,
    reserved_quantity  numeric(14,3) NOT NULL DEFAULT 0,
    content_hash       varchar(128)  NOT NULL,
    erp_updated_at     timestamptz   NOT NULL,
    last_synced_at     timestamptz   NOT NULL DEFAULT now(),
    created_at         timestamptz   NOT NULL DEFAULT now(),
    updated_at         timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT stock_vendor_warehouse_item_key UNIQUE (vendor_id, warehouse_id, item_id)
);
CREATE INDEX IF NOT EXISTS idx_stock_item ON stock (item_id);
