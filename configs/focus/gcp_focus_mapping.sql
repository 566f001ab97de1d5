-- GCP -> FOCUS 1.2 (Cost and Usage dataset): the rows of focus_cost built from the org's GCP cost table.
--
-- One FOCUS row per row of the cost table `billing_cost_daily` (template `billing_cost` in
-- configs/gcp/bq_etl/schema_template.json, filled by configs/gcp/cost/cost_billing.yml from Google's
-- standard usage cost export; its columns are the export's fields flattened, the repeated ones as JSON
-- text). Columns: configs/focus/focus_cost_schema.json. Run by the `focus.build` step of that pipeline
-- for the days the load replaced: parameters start_date, end_date (UTC usage days, inclusive; never write
-- their @-names in a comment: the local BigQuery emulator counts those as parameters). Placeholder:
-- {source_table} (project.dataset.table of the cost table, a validated name). BigQuery Standard SQL;
-- the DuckDB backend runs its translation (src/core/engine/translate.py).
--
-- Sources: Google's FOCUS view of the billing export ("FOCUS BigQuery view", FOCUS 1.0, March 2024;
-- ../shared/reference/gcp_billing_and_focus.md section 2.3) and the FOCUS 1.2 specification; where
-- this mapping differs from Google's view, the column says so and why.
--
-- Decisions:
-- * Money. BilledCost = `cost`, the export's gross cost BEFORE credits (as in Google's view), so that
--   SUM(BilledCost) per day and currency equals the cost table's SUM(cost) -- the check the step runs.
--   Credits are not separate Credit rows (one FOCUS row per export row); they stay on the row:
--   x_Credits (all of them), x_CreditAmount (their sum), EffectiveCost = cost + credits (Google's view
--   leaves credits out of EffectiveCost). ContractedCost = cost + negotiated credits (DISCOUNT,
--   RESELLER_MARGIN). ListCost = cost_at_list. On usage rows ListCost >= ContractedCost >= EffectiveCost;
--   on Credit / Adjustment rows the four are equal, as FOCUS wants for charges unrelated to others.
--   Money columns are NUMERIC: PARSE_NUMERIC(CAST(x AS STRING)) turns FLOAT64 into NUMERIC with 9
--   decimals on BigQuery and on the local emulator alike (the emulator's CAST(x AS NUMERIC) keeps 3).
--   Unit prices and quantities stay FLOAT64 (FOCUS Decimal): unit price x quantity = cost must hold to
--   1e-9 relative, which a price rounded to 9 decimals would break.
-- * ChargeCategory from cost_type: regular -> Usage, tax -> Tax, rounding_error -> Adjustment,
--   adjustment -> Adjustment except goodwill and SLA credits (adjustment_info.type GOODWILL,
--   SALES_BASED_GOODWILL, SLA_VIOLATION) -> Credit. Nothing is Purchase: CUD fees come as regular
--   "Commitment ..." usage SKUs and stay Usage with PricingCategory Committed (as in Google's view).
-- * ChargeClass = Correction only for a correcting adjustment whose usage lies before its invoice month
--   (it corrects an invoiced period); NULL otherwise.
-- * BillingPeriodStart/End from invoice.month: Google invoices calendar months in US Pacific time, so
--   [first day of invoice.month, first day of the next month) at 00:00 America/Los_Angeles, in UTC; the
--   end is EXCLUSIVE (Google's view uses the month's last day).
-- * CommitmentDiscount*: from the row's CUD credit (type COMMITTED_USAGE_DISCOUNT -> Usage,
--   COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE -> Spend), the largest if several; Status Used. The standard
--   export has no unused-commitment rows (that needs cud_subscriptions_export), so no Unused rows.
-- * Tags: one JSON object. Resource labels and the project's (inherited) labels share the unprefixed
--   user scheme, the resource's label winning on a clash; Resource Manager tags as
--   "<namespace>/<key>"; system labels keep Google's keys (all "<service>.googleapis.com/..."), which
--   are prefixed already. Built once per distinct set of labels in the window (few) and joined back.
-- * Lookups (service -> category, region -> name, unit -> FOCUS unit) are small tables joined once,
--   not CASE expressions per row; unknown values fall back to Other / the ID / the unit as exported.
--
-- Known gaps of the standard export (fill from the detailed / pricing / CUD exports later): ResourceId,
-- ResourceName, ResourceType (detailed export: resource.global_name / resource.name); SkuPriceId = SkuId
-- (no price tier; Google's view adds the tier start); unit prices are per row (cost / quantity), not the
-- price list's; BillingAccountName = the account ID (no display name in the export); InvoiceId NULL;
-- CapacityReservation* NULL; CUD fees are not amortized into the covered rows; InvoiceIssuerName is
-- always Google Cloud (partner-billed sub-accounts and THIRD_PARTY_AGENCY Marketplace charges are invoiced
-- by someone else, which the export does not say); strings are taken as exported (the validator accepts
-- ASCII only: a non-ASCII project name fails its String format rule).

WITH
services AS (
  -- FOCUS 1.2 ServiceCategory / ServiceSubcategory per GCP service.description (one pair per service).
  SELECT 'Compute Engine' AS service_name, 'Compute' AS category, 'Virtual Machines' AS subcategory
  UNION ALL SELECT 'VMware Engine', 'Compute', 'Virtual Machines'
  UNION ALL SELECT 'Bare Metal Solution', 'Compute', 'Virtual Machines'
  UNION ALL SELECT 'Kubernetes Engine', 'Compute', 'Containers'
  UNION ALL SELECT 'GKE Enterprise', 'Compute', 'Containers'
  UNION ALL SELECT 'Cloud Run', 'Compute', 'Serverless Compute'
  UNION ALL SELECT 'Cloud Run Functions', 'Compute', 'Serverless Compute'
  UNION ALL SELECT 'Cloud Functions', 'Compute', 'Serverless Compute'
  UNION ALL SELECT 'App Engine', 'Compute', 'Serverless Compute'
  UNION ALL SELECT 'Batch', 'Compute', 'Other (Compute)'
  UNION ALL SELECT 'Cloud Storage', 'Storage', 'Object Storage'
  UNION ALL SELECT 'Filestore', 'Storage', 'File Storage'
  UNION ALL SELECT 'Persistent Disk', 'Storage', 'Block Storage'
  UNION ALL SELECT 'Backup and DR Service', 'Storage', 'Backup Storage'
  UNION ALL SELECT 'BigQuery', 'Databases', 'Data Warehouses'
  UNION ALL SELECT 'BigQuery Reservation API', 'Databases', 'Data Warehouses'
  UNION ALL SELECT 'BigQuery Storage API', 'Databases', 'Data Warehouses'
  UNION ALL SELECT 'Cloud SQL', 'Databases', 'Relational Databases'
  UNION ALL SELECT 'AlloyDB', 'Databases', 'Relational Databases'
  UNION ALL SELECT 'Cloud Spanner', 'Databases', 'Relational Databases'
  UNION ALL SELECT 'Spanner', 'Databases', 'Relational Databases'
  UNION ALL SELECT 'Cloud Bigtable', 'Databases', 'NoSQL Databases'
  UNION ALL SELECT 'Cloud Firestore', 'Databases', 'NoSQL Databases'
  UNION ALL SELECT 'Cloud Datastore', 'Databases', 'NoSQL Databases'
  UNION ALL SELECT 'Cloud Memorystore for Redis', 'Databases', 'Caching'
  UNION ALL SELECT 'Memorystore for Redis', 'Databases', 'Caching'
  UNION ALL SELECT 'Dataflow', 'Analytics', 'Data Processing'
  UNION ALL SELECT 'Cloud Dataflow', 'Analytics', 'Data Processing'
  UNION ALL SELECT 'Cloud Dataproc', 'Analytics', 'Data Processing'
  UNION ALL SELECT 'Dataproc', 'Analytics', 'Data Processing'
  UNION ALL SELECT 'Cloud Data Fusion', 'Analytics', 'Data Processing'
  UNION ALL SELECT 'Looker', 'Analytics', 'Business Intelligence'
  UNION ALL SELECT 'Looker Studio', 'Analytics', 'Business Intelligence'
  UNION ALL SELECT 'Cloud Composer', 'Integration', 'Workflow Orchestration'
  UNION ALL SELECT 'Cloud Pub/Sub', 'Integration', 'Messaging'
  UNION ALL SELECT 'Pub/Sub', 'Integration', 'Messaging'
  UNION ALL SELECT 'Cloud Tasks', 'Integration', 'Messaging'
  UNION ALL SELECT 'Eventarc', 'Integration', 'Messaging'
  UNION ALL SELECT 'Workflows', 'Integration', 'Workflow Orchestration'
  UNION ALL SELECT 'Cloud Scheduler', 'Integration', 'Workflow Orchestration'
  UNION ALL SELECT 'Apigee', 'Integration', 'API Management'
  UNION ALL SELECT 'API Gateway', 'Integration', 'API Management'
  UNION ALL SELECT 'Networking', 'Networking', 'Network Infrastructure'
  UNION ALL SELECT 'Network Connectivity Center', 'Networking', 'Network Connectivity'
  UNION ALL SELECT 'Cloud Interconnect', 'Networking', 'Network Connectivity'
  UNION ALL SELECT 'Cloud VPN', 'Networking', 'Network Connectivity'
  UNION ALL SELECT 'Cloud NAT', 'Networking', 'Network Routing'
  UNION ALL SELECT 'Cloud DNS', 'Networking', 'Network Routing'
  UNION ALL SELECT 'Cloud Load Balancing', 'Networking', 'Application Networking'
  UNION ALL SELECT 'Cloud CDN', 'Networking', 'Content Delivery'
  UNION ALL SELECT 'Cloud Armor', 'Networking', 'Network Security'
  UNION ALL SELECT 'Network Intelligence Center', 'Networking', 'Other (Networking)'
  UNION ALL SELECT 'Cloud Logging', 'Management and Governance', 'Observability'
  UNION ALL SELECT 'Cloud Monitoring', 'Management and Governance', 'Observability'
  UNION ALL SELECT 'Stackdriver Monitoring', 'Management and Governance', 'Observability'
  UNION ALL SELECT 'Cloud Trace', 'Management and Governance', 'Observability'
  UNION ALL SELECT 'Support', 'Management and Governance', 'Support'
  UNION ALL SELECT 'Cloud Billing', 'Management and Governance', 'Cost Management'
  UNION ALL SELECT 'Dataplex', 'Management and Governance', 'Data Governance'
  UNION ALL SELECT 'Secret Manager', 'Security', 'Secret Management'
  UNION ALL SELECT 'Cloud Key Management Service (KMS)', 'Security', 'Secret Management'
  UNION ALL SELECT 'Security Command Center', 'Security', 'Security Posture Management'
  UNION ALL SELECT 'reCAPTCHA Enterprise', 'Security', 'Threat Detection and Response'
  UNION ALL SELECT 'Identity Platform', 'Identity', 'Identity and Access Management'
  UNION ALL SELECT 'Identity-Aware Proxy', 'Identity', 'Identity and Access Management'
  UNION ALL SELECT 'Cloud Build', 'Developer Tools', 'Continuous Integration and Deployment'
  UNION ALL SELECT 'Cloud Deploy', 'Developer Tools', 'Continuous Integration and Deployment'
  UNION ALL SELECT 'Artifact Registry', 'Developer Tools', 'Developer Platforms'
  UNION ALL SELECT 'Container Registry', 'Developer Tools', 'Developer Platforms'
  UNION ALL SELECT 'Cloud Source Repositories', 'Developer Tools', 'Source Code Management'
  UNION ALL SELECT 'Cloud Workstations', 'Developer Tools', 'Development Environments'
  UNION ALL SELECT 'Vertex AI', 'AI and Machine Learning', 'AI Platforms'
  UNION ALL SELECT 'Gemini API', 'AI and Machine Learning', 'Generative AI'
  UNION ALL SELECT 'Generative Language API', 'AI and Machine Learning', 'Generative AI'
  UNION ALL SELECT 'Cloud Vision API', 'AI and Machine Learning', 'Machine Learning'
  UNION ALL SELECT 'Cloud Speech API', 'AI and Machine Learning', 'Natural Language Processing'
  UNION ALL SELECT 'Cloud Natural Language API', 'AI and Machine Learning', 'Natural Language Processing'
  UNION ALL SELECT 'Cloud Translation API', 'AI and Machine Learning', 'Natural Language Processing'
  UNION ALL SELECT 'Dialogflow', 'AI and Machine Learning', 'Bots'
  UNION ALL SELECT 'Maps API', 'Web', 'Application Platforms'
  UNION ALL SELECT 'Firebase Hosting', 'Web', 'Application Platforms'
  UNION ALL SELECT 'Google Workspace', 'Business Applications', 'Productivity and Collaboration'
  UNION ALL SELECT 'Database Migration Service', 'Migration', 'Data Migration'
  UNION ALL SELECT 'Storage Transfer Service', 'Migration', 'Data Migration'
  UNION ALL SELECT 'Migrate to Virtual Machines', 'Migration', 'Resource Migration'
),

regions AS (
  -- Google's display names of its regions and multi-regions (ASCII: the validator rejects others).
  SELECT 'us' AS region_id, 'United States (multi-region)' AS region_name
  UNION ALL SELECT 'eu', 'European Union (multi-region)'
  UNION ALL SELECT 'asia', 'Asia Pacific (multi-region)'
  UNION ALL SELECT 'us-central1', 'Iowa'
  UNION ALL SELECT 'us-east1', 'South Carolina'
  UNION ALL SELECT 'us-east4', 'Northern Virginia'
  UNION ALL SELECT 'us-east5', 'Columbus'
  UNION ALL SELECT 'us-south1', 'Dallas'
  UNION ALL SELECT 'us-west1', 'Oregon'
  UNION ALL SELECT 'us-west2', 'Los Angeles'
  UNION ALL SELECT 'us-west3', 'Salt Lake City'
  UNION ALL SELECT 'us-west4', 'Las Vegas'
  UNION ALL SELECT 'northamerica-northeast1', 'Montreal'
  UNION ALL SELECT 'northamerica-northeast2', 'Toronto'
  UNION ALL SELECT 'southamerica-east1', 'Sao Paulo'
  UNION ALL SELECT 'southamerica-west1', 'Santiago'
  UNION ALL SELECT 'europe-west1', 'Belgium'
  UNION ALL SELECT 'europe-west2', 'London'
  UNION ALL SELECT 'europe-west3', 'Frankfurt'
  UNION ALL SELECT 'europe-west4', 'Netherlands'
  UNION ALL SELECT 'europe-west6', 'Zurich'
  UNION ALL SELECT 'europe-west8', 'Milan'
  UNION ALL SELECT 'europe-west9', 'Paris'
  UNION ALL SELECT 'europe-west10', 'Berlin'
  UNION ALL SELECT 'europe-west12', 'Turin'
  UNION ALL SELECT 'europe-north1', 'Finland'
  UNION ALL SELECT 'europe-central2', 'Warsaw'
  UNION ALL SELECT 'europe-southwest1', 'Madrid'
  UNION ALL SELECT 'me-west1', 'Tel Aviv'
  UNION ALL SELECT 'me-central1', 'Doha'
  UNION ALL SELECT 'me-central2', 'Dammam'
  UNION ALL SELECT 'africa-south1', 'Johannesburg'
  UNION ALL SELECT 'asia-east1', 'Taiwan'
  UNION ALL SELECT 'asia-east2', 'Hong Kong'
  UNION ALL SELECT 'asia-northeast1', 'Tokyo'
  UNION ALL SELECT 'asia-northeast2', 'Osaka'
  UNION ALL SELECT 'asia-northeast3', 'Seoul'
  UNION ALL SELECT 'asia-south1', 'Mumbai'
  UNION ALL SELECT 'asia-south2', 'Delhi'
  UNION ALL SELECT 'asia-southeast1', 'Singapore'
  UNION ALL SELECT 'asia-southeast2', 'Jakarta'
  UNION ALL SELECT 'australia-southeast1', 'Sydney'
  UNION ALL SELECT 'australia-southeast2', 'Melbourne'
),

units AS (
  -- GCP's usage.unit / usage.pricing_unit -> FOCUS UnitFormat (unknown units pass through).
  SELECT 'hour' AS gcp_unit, 'Hours' AS focus_unit
  UNION ALL SELECT 'month', 'Months'
  UNION ALL SELECT 'day', 'Days'
  UNION ALL SELECT 'second', 'Seconds'
  UNION ALL SELECT 'seconds', 'Seconds'
  UNION ALL SELECT 'minute', 'Minutes'
  UNION ALL SELECT 'count', 'Count'
  UNION ALL SELECT 'request', 'Requests'
  UNION ALL SELECT 'requests', 'Requests'
  UNION ALL SELECT 'byte', 'B'
  UNION ALL SELECT 'bytes', 'B'
  UNION ALL SELECT 'byte-seconds', 'B-Seconds'
  UNION ALL SELECT 'kibibyte', 'KiB'
  UNION ALL SELECT 'mebibyte', 'MiB'
  UNION ALL SELECT 'gibibyte', 'GiB'
  UNION ALL SELECT 'tebibyte', 'TiB'
  UNION ALL SELECT 'pebibyte', 'PiB'
  UNION ALL SELECT 'gigabyte', 'GB'
  UNION ALL SELECT 'gibibyte hour', 'GiB-Hours'
  UNION ALL SELECT 'gibibyte month', 'GiB-Months'
  UNION ALL SELECT 'gibibyte day', 'GiB-Days'
  UNION ALL SELECT 'gibibyte second', 'GiB-Seconds'
  UNION ALL SELECT 'mebibyte second', 'MiB-Seconds'
  UNION ALL SELECT 'tebibyte month', 'TiB-Months'
),

periods AS (
  -- The billing period of each invoice month in the window: a calendar month in US Pacific time, in UTC.
  SELECT m.invoice_month,
         TIMESTAMP(PARSE_DATE('%Y%m', m.invoice_month), 'America/Los_Angeles') AS period_start,
         TIMESTAMP(DATE_ADD(PARSE_DATE('%Y%m', m.invoice_month), INTERVAL 1 MONTH), 'America/Los_Angeles') AS period_end
  FROM (
    SELECT DISTINCT r.invoice_month
    FROM `{source_table}` AS r
    WHERE r.usage_date BETWEEN @start_date AND @end_date
  ) AS m
),

tag_sets AS (
  -- Tags, once per distinct combination of the four label arrays in the window.
  SELECT
    d.labels_json, d.project_labels_json, d.tags_json, d.system_labels_json,
    '{' || ARRAY_TO_STRING([
      -- resource labels
      (SELECT STRING_AGG(TO_JSON_STRING(JSON_VALUE(l, '$.key')) || ':' || IFNULL(TO_JSON_STRING(JSON_VALUE(l, '$.value')), 'null'), ',')
       FROM UNNEST(JSON_QUERY_ARRAY(d.labels_json)) AS l),
      -- project labels the resource does not override
      (SELECT STRING_AGG(TO_JSON_STRING(JSON_VALUE(p, '$.key')) || ':' || IFNULL(TO_JSON_STRING(JSON_VALUE(p, '$.value')), 'null'), ',')
       FROM UNNEST(JSON_QUERY_ARRAY(d.project_labels_json)) AS p
       WHERE NOT EXISTS (SELECT 1 FROM UNNEST(JSON_QUERY_ARRAY(d.labels_json)) AS o
                         WHERE JSON_VALUE(o, '$.key') = JSON_VALUE(p, '$.key'))),
      -- Resource Manager tags, namespaced
      (SELECT STRING_AGG(TO_JSON_STRING(JSON_VALUE(g, '$.namespace') || '/' || JSON_VALUE(g, '$.key')) || ':' || IFNULL(TO_JSON_STRING(JSON_VALUE(g, '$.value')), 'null'), ',')
       FROM UNNEST(JSON_QUERY_ARRAY(d.tags_json)) AS g),
      -- system labels (keys prefixed by Google)
      (SELECT STRING_AGG(TO_JSON_STRING(JSON_VALUE(y, '$.key')) || ':' || IFNULL(TO_JSON_STRING(JSON_VALUE(y, '$.value')), 'null'), ',')
       FROM UNNEST(JSON_QUERY_ARRAY(d.system_labels_json)) AS y)
    ], ',') || '}' AS tags
  FROM (
    SELECT DISTINCT r.labels_json, r.project_labels_json, r.tags_json, r.system_labels_json
    FROM `{source_table}` AS r
    WHERE r.usage_date BETWEEN @start_date AND @end_date
  ) AS d
),

src AS (
  SELECT
    r.*,
    CASE
      WHEN r.cost_type = 'regular' THEN 'Usage'
      WHEN r.cost_type = 'tax' THEN 'Tax'
      WHEN r.cost_type = 'adjustment' AND r.adjustment_type IN ('GOODWILL', 'SALES_BASED_GOODWILL', 'SLA_VIOLATION') THEN 'Credit'
      ELSE 'Adjustment'  -- adjustment, rounding_error, and any cost_type Google adds later
    END AS charge_category,
    -- Negotiated-rate credits (contract discounts, reseller margin). The LIKE only skips rows without one.
    IF(r.credits_json LIKE '%"DISCOUNT"%' OR r.credits_json LIKE '%"RESELLER_MARGIN"%',
       IFNULL((SELECT SUM(CAST(JSON_VALUE(c, '$.amount') AS FLOAT64)) FROM UNNEST(JSON_QUERY_ARRAY(r.credits_json)) AS c
               WHERE JSON_VALUE(c, '$.type') IN ('DISCOUNT', 'RESELLER_MARGIN')), 0),
       0) AS negotiated_credits,
    -- The largest CUD credit of the row (most negative amount), NULL without one.
    IF(r.credits_json LIKE '%"COMMITTED_USAGE_DISCOUNT%',
       (SELECT MIN(CAST(JSON_VALUE(c, '$.amount') AS FLOAT64)) FROM UNNEST(JSON_QUERY_ARRAY(r.credits_json)) AS c
        WHERE JSON_VALUE(c, '$.type') IN ('COMMITTED_USAGE_DISCOUNT', 'COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE')),
       NULL) AS cud_amount
  FROM `{source_table}` AS r
  WHERE r.usage_date BETWEEN @start_date AND @end_date
),

cud AS (
  SELECT
    s.*,
    -- Id of the largest CUD credit (the smallest id among equal amounts).
    IF(s.cud_amount IS NULL, NULL,
       (SELECT MIN(JSON_VALUE(c, '$.id')) FROM UNNEST(JSON_QUERY_ARRAY(s.credits_json)) AS c
        WHERE JSON_VALUE(c, '$.type') IN ('COMMITTED_USAGE_DISCOUNT', 'COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE')
          AND CAST(JSON_VALUE(c, '$.amount') AS FLOAT64) = s.cud_amount)) AS cud_id
  FROM src AS s
),

credited AS (
  SELECT
    u.*,
    IF(u.cud_id IS NULL, NULL,
       (SELECT MIN(JSON_VALUE(c, '$.full_name')) FROM UNNEST(JSON_QUERY_ARRAY(u.credits_json)) AS c
        WHERE JSON_VALUE(c, '$.id') = u.cud_id)) AS cud_name,
    IF(u.cud_id IS NULL, NULL,
       (SELECT MIN(JSON_VALUE(c, '$.type')) FROM UNNEST(JSON_QUERY_ARRAY(u.credits_json)) AS c
        WHERE JSON_VALUE(c, '$.id') = u.cud_id)) AS cud_type,
    -- Money as NUMERIC (see the header).
    PARSE_NUMERIC(CAST(u.cost AS STRING)) AS billed,
    PARSE_NUMERIC(CAST(u.cost + IFNULL(u.credits_total, 0) AS STRING)) AS effective,
    PARSE_NUMERIC(CAST(IF(u.charge_category IN ('Credit', 'Adjustment'), u.cost, IFNULL(u.cost_at_list, u.cost)) AS STRING)) AS listed,
    PARSE_NUMERIC(CAST(u.cost + u.negotiated_credits AS STRING)) AS contracted,
    -- Usage rows are priced; other rows carry no quantity (FOCUS: null for Tax, and for credits and
    -- adjustments the quantity is not a usage).
    IF(u.charge_category = 'Usage', u.usage_amount_in_pricing_units, NULL) AS pricing_quantity
  FROM cud AS u
)

SELECT
  -- x_UsageDate: the cost table's UTC usage day (partition). Source: usage_date.
  k.usage_date AS x_UsageDate,
  -- x_Provider: constant.
  'gcp' AS x_Provider,
  -- BilledCost: gross cost before credits (see the header). Source: cost.
  k.billed AS BilledCost,
  -- EffectiveCost: cost + every credit (the cost table's net_cost). Source: cost, credits_total.
  k.effective AS EffectiveCost,
  -- ListCost: cost at list prices; BilledCost for credits and adjustments. Source: cost_at_list (cost when missing).
  k.listed AS ListCost,
  -- ContractedCost: cost + DISCOUNT / RESELLER_MARGIN credits. Source: cost, credits_json.
  k.contracted AS ContractedCost,
  -- BillingAccountId (the reseller sub-account where applicable, as exported). Source: billing_account_id.
  k.billing_account_id AS BillingAccountId,
  -- BillingAccountName: the export has no display name; the ID stands in. Source: billing_account_id.
  k.billing_account_id AS BillingAccountName,
  -- BillingCurrency. Source: currency.
  k.currency AS BillingCurrency,
  -- BillingPeriodStart: first instant of invoice.month in US Pacific time. Source: invoice_month.
  pr.period_start AS BillingPeriodStart,
  -- BillingPeriodEnd: first instant of the next month (exclusive). Source: invoice_month.
  pr.period_end AS BillingPeriodEnd,
  -- ChargePeriodStart. Source: usage_start_time.
  k.usage_start_time AS ChargePeriodStart,
  -- ChargePeriodEnd (exclusive). Source: usage_end_time.
  k.usage_end_time AS ChargePeriodEnd,
  -- ChargeCategory: Usage | Tax | Adjustment | Credit (see the header). Source: cost_type, adjustment_type.
  k.charge_category AS ChargeCategory,
  -- ChargeClass: Correction for a correcting adjustment of an earlier invoice month, else NULL.
  -- Source: cost_type, adjustment_mode, adjustment_type, usage_start_time, invoice_month.
  IF(k.cost_type = 'adjustment'
       AND (k.adjustment_mode IN ('PARTIAL_CORRECTION', 'COMPLETE_NEGATION') OR ENDS_WITH(k.adjustment_type, '_CORRECTION'))
       AND k.usage_start_time < pr.period_start,
     'Correction', NULL) AS ChargeClass,
  -- ChargeDescription: the adjustment's text for adjustments, else the SKU. Source: adjustment_description, sku_description.
  COALESCE(k.adjustment_description, k.sku_description) AS ChargeDescription,
  -- ChargeFrequency: commitment fees (SKU "Commitment ...") Recurring, other usage Usage-Based, the rest
  -- One-Time. Source: cost_type, sku_description.
  CASE
    WHEN k.charge_category <> 'Usage' THEN 'One-Time'
    WHEN STARTS_WITH(k.sku_description, 'Commitment') THEN 'Recurring'
    ELSE 'Usage-Based'
  END AS ChargeFrequency,
  -- ServiceName. Source: service_description.
  k.service_description AS ServiceName,
  -- ServiceCategory: the services table above, Other when unknown (Marketplace products included). Source: service_description.
  IFNULL(sv.category, 'Other') AS ServiceCategory,
  -- ServiceSubcategory: as ServiceCategory. Source: service_description.
  IFNULL(sv.subcategory, 'Other (Other)') AS ServiceSubcategory,
  -- ProviderName: constant.
  'Google Cloud' AS ProviderName,
  -- PublisherName: Google, or the Marketplace seller. Source: transaction_type, seller_name.
  IF(k.transaction_type = 'GOOGLE' OR k.seller_name IS NULL, 'Google Cloud', k.seller_name) AS PublisherName,
  -- InvoiceIssuerName: constant (see Known gaps).
  'Google Cloud' AS InvoiceIssuerName,
  -- InvoiceId: not in the export. NULL.
  CAST(NULL AS STRING) AS InvoiceId,
  -- RegionId: the region, or the multi-region location (us, eu, asia); NULL for global. Source: region, location.
  k.region_id AS RegionId,
  -- RegionName: Google's display name (the ID when not in the regions table). Source: region, location.
  IFNULL(rg.region_name, k.region_id) AS RegionName,
  -- AvailabilityZone. Source: zone.
  k.zone AS AvailabilityZone,
  -- ResourceId: not in the standard export (detailed export: resource.global_name). NULL.
  CAST(NULL AS STRING) AS ResourceId,
  -- ResourceName: not in the standard export (detailed export: resource.name). NULL.
  CAST(NULL AS STRING) AS ResourceName,
  -- ResourceType: not in the standard export. NULL.
  CAST(NULL AS STRING) AS ResourceType,
  -- SkuId: the SKU, NULL for Tax (FOCUS). Source: sku_id.
  IF(k.charge_category = 'Tax', NULL, k.sku_id) AS SkuId,
  -- SkuPriceId: the SKU for priced usage (no price tier in the standard export), else NULL. Source: sku_id.
  IF(k.charge_category = 'Usage', k.sku_id, NULL) AS SkuPriceId,
  -- SkuMeter: what the SKU meters. Source: sku_description.
  IF(k.charge_category = 'Tax' OR k.sku_id IS NULL, NULL, k.sku_description) AS SkuMeter,
  -- SkuPriceDetails: no price properties in the standard export. NULL.
  CAST(NULL AS STRING) AS SkuPriceDetails,
  -- PricingCategory: Committed with a CUD or for commitment SKUs, Dynamic for Spot / Preemptible, else
  -- Standard; NULL for rows that are not usage. Source: credits_json, sku_description.
  CASE
    WHEN k.charge_category <> 'Usage' THEN NULL
    WHEN k.cud_id IS NOT NULL OR STARTS_WITH(k.sku_description, 'Commitment') THEN 'Committed'
    WHEN STRPOS(LOWER(k.sku_description), 'spot') > 0 OR STRPOS(LOWER(k.sku_description), 'preemptible') > 0 THEN 'Dynamic'
    ELSE 'Standard'
  END AS PricingCategory,
  -- PricingQuantity: usage in pricing units, usage rows only. Source: usage_amount_in_pricing_units.
  k.pricing_quantity AS PricingQuantity,
  -- PricingUnit: FOCUS unit of the pricing unit. Source: usage_pricing_unit.
  IF(k.pricing_quantity IS NULL, NULL, IFNULL(pu.focus_unit, k.usage_pricing_unit)) AS PricingUnit,
  -- ListUnitPrice: ListCost / PricingQuantity (0 when both are 0). Source: cost_at_list, usage_amount_in_pricing_units.
  CASE
    WHEN k.pricing_quantity IS NULL THEN NULL
    WHEN k.pricing_quantity <> 0 THEN CAST(k.listed AS FLOAT64) / k.pricing_quantity
    WHEN k.listed = 0 THEN 0
  END AS ListUnitPrice,
  -- ContractedUnitPrice: ContractedCost / PricingQuantity. Source: cost, credits_json, usage_amount_in_pricing_units.
  CASE
    WHEN k.pricing_quantity IS NULL THEN NULL
    WHEN k.pricing_quantity <> 0 THEN CAST(k.contracted AS FLOAT64) / k.pricing_quantity
    WHEN k.contracted = 0 THEN 0
  END AS ContractedUnitPrice,
  -- PricingCurrency: Google's prices are in USD; currency_conversion_rate converts to the billing currency.
  'USD' AS PricingCurrency,
  -- PricingCurrencyListUnitPrice: ListUnitPrice in USD. Source: as ListUnitPrice, currency_conversion_rate.
  CASE
    WHEN k.pricing_quantity IS NULL THEN NULL
    WHEN k.pricing_quantity <> 0 THEN CAST(k.listed AS FLOAT64) / k.pricing_quantity / k.currency_conversion_rate
    WHEN k.listed = 0 THEN 0
  END AS PricingCurrencyListUnitPrice,
  -- PricingCurrencyContractedUnitPrice: ContractedUnitPrice in USD. Source: as ContractedUnitPrice.
  CASE
    WHEN k.pricing_quantity IS NULL THEN NULL
    WHEN k.pricing_quantity <> 0 THEN CAST(k.contracted AS FLOAT64) / k.pricing_quantity / k.currency_conversion_rate
    WHEN k.contracted = 0 THEN 0
  END AS PricingCurrencyContractedUnitPrice,
  -- PricingCurrencyEffectiveCost: EffectiveCost in USD. Source: cost, credits_total, currency_conversion_rate.
  PARSE_NUMERIC(CAST((k.cost + IFNULL(k.credits_total, 0)) / k.currency_conversion_rate AS STRING)) AS PricingCurrencyEffectiveCost,
  -- ConsumedQuantity: metered usage, usage rows only. Source: usage_amount.
  IF(k.charge_category = 'Usage', k.usage_amount, NULL) AS ConsumedQuantity,
  -- ConsumedUnit: FOCUS unit of usage.unit. Source: usage_unit.
  IF(k.charge_category = 'Usage' AND k.usage_amount IS NOT NULL, IFNULL(cu.focus_unit, k.usage_unit), NULL) AS ConsumedUnit,
  -- SubAccountId: the project (NULL for account-level charges). Source: project_id.
  k.project_id AS SubAccountId,
  -- SubAccountName: the project's name (its ID when missing). Source: project_name, project_id.
  IF(k.project_id IS NULL, NULL, IFNULL(k.project_name, k.project_id)) AS SubAccountName,
  -- Tags: JSON object of labels, project labels, tags and system labels (see the header).
  -- Source: labels_json, project_labels_json, tags_json, system_labels_json.
  tg.tags AS Tags,
  -- CommitmentDiscountId: the CUD credit's id (Google's view: subscription.instance_id, detailed export). Source: credits_json.
  k.cud_id AS CommitmentDiscountId,
  -- CommitmentDiscountName: the CUD credit's full name. Source: credits_json.
  k.cud_name AS CommitmentDiscountName,
  -- CommitmentDiscountCategory: Usage (resource-based) or Spend (spend-based). Source: credits_json type.
  CASE k.cud_type WHEN 'COMMITTED_USAGE_DISCOUNT' THEN 'Usage' WHEN 'COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE' THEN 'Spend' END AS CommitmentDiscountCategory,
  -- CommitmentDiscountType: Google's kind of CUD. Source: credits_json type.
  CASE k.cud_type
    WHEN 'COMMITTED_USAGE_DISCOUNT' THEN 'Resource-based committed use discount'
    WHEN 'COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE' THEN 'Spend-based committed use discount'
  END AS CommitmentDiscountType,
  -- CommitmentDiscountStatus: Used on usage rows a CUD applied to. Source: credits_json.
  IF(k.cud_id IS NOT NULL AND k.charge_category = 'Usage', 'Used', NULL) AS CommitmentDiscountStatus,
  -- CommitmentDiscountQuantity, usage rows with a CUD: resource-based, the pricing quantity the CUD covered
  -- (PricingQuantity x the share of the cost the credit took back); spend-based, the commitment consumed at
  -- the committed rate (cost + CUD credit, in the billing currency). Source: credits_json, cost, usage_amount_in_pricing_units.
  CASE
    WHEN k.cud_id IS NULL OR k.charge_category <> 'Usage' THEN NULL
    WHEN k.cud_type = 'COMMITTED_USAGE_DISCOUNT' THEN k.usage_amount_in_pricing_units * IF(k.cost > 0, LEAST(1, -k.cud_amount / k.cost), 0)
    ELSE k.cost + k.cud_amount
  END AS CommitmentDiscountQuantity,
  -- CommitmentDiscountUnit: the pricing unit (resource-based) or the billing currency (spend-based). Source: as above.
  CASE
    WHEN k.cud_id IS NULL OR k.charge_category <> 'Usage' THEN NULL
    WHEN k.cud_type = 'COMMITTED_USAGE_DISCOUNT' THEN IFNULL(pu.focus_unit, k.usage_pricing_unit)
    ELSE k.currency
  END AS CommitmentDiscountUnit,
  -- CapacityReservationId: not in the export (only the system label compute.googleapis.com/is_unused_reservation). NULL.
  CAST(NULL AS STRING) AS CapacityReservationId,
  -- CapacityReservationStatus: NULL, as CapacityReservationId.
  CAST(NULL AS STRING) AS CapacityReservationStatus,
  -- x_ServiceId: Google's service ID. Source: service_id.
  k.service_id AS x_ServiceId,
  -- x_CostType: Google's line type (regular, tax, adjustment, rounding_error). Source: cost_type.
  k.cost_type AS x_CostType,
  -- x_LineItemType: AWS only. NULL.
  CAST(NULL AS STRING) AS x_LineItemType,
  -- x_Credits: the row's credits, JSON [{name, amount, full_name, id, type}]; NULL when none. Source: credits_json.
  IF(k.credits_json = '[]', NULL, k.credits_json) AS x_Credits,
  -- x_CreditAmount: sum of the credits (<= 0). Source: credits_total.
  PARSE_NUMERIC(CAST(IFNULL(k.credits_total, 0) AS STRING)) AS x_CreditAmount,
  -- x_CurrencyConversionRate: USD -> billing currency. Source: currency_conversion_rate.
  k.currency_conversion_rate AS x_CurrencyConversionRate,
  -- x_ExportTime: when Google exported the row (later for late corrections). Source: export_time.
  k.export_time AS x_ExportTime,
  -- x_UsageType: AWS only. NULL.
  CAST(NULL AS STRING) AS x_UsageType,
  -- x_Operation: AWS only. NULL.
  CAST(NULL AS STRING) AS x_Operation,
  -- x_CostCategories: AWS only. NULL.
  CAST(NULL AS STRING) AS x_CostCategories
FROM (
  SELECT
    c.*,
    -- Multi-region locations (us, eu, asia) are regions for FOCUS; global is not.
    IFNULL(c.region, IF(c.location IS NULL OR c.location = 'global', NULL, c.location)) AS region_id
  FROM credited AS c
) AS k
LEFT JOIN periods AS pr ON pr.invoice_month = k.invoice_month
LEFT JOIN services AS sv ON sv.service_name = k.service_description
LEFT JOIN regions AS rg ON rg.region_id = k.region_id
LEFT JOIN units AS pu ON pu.gcp_unit = k.usage_pricing_unit
LEFT JOIN units AS cu ON cu.gcp_unit = k.usage_unit
LEFT JOIN tag_sets AS tg
  ON tg.labels_json = k.labels_json
  AND tg.project_labels_json = k.project_labels_json
  AND tg.tags_json = k.tags_json
  AND tg.system_labels_json = k.system_labels_json
