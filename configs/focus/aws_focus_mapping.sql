-- AWS -> FOCUS 1.2 (Cost and Usage dataset): the rows of focus_cost built from the org's AWS CUR 2.0 table.
--
-- One FOCUS row per line item of `aws_billing_cost_daily` (CUR 2.0 columns as listed in
-- configs/aws/cost/cur2_columns.json, the map columns product, discount, resource_tags and cost_category
-- as JSON object text, plus usage_date = DATE(line_item_usage_start_date) in UTC and billing_period
-- 'YYYY-MM'). Columns: configs/focus/focus_cost_schema.json. Run by a `focus.build` step
-- (replace: billing_periods) after the AWS load, for the billing periods that load replaced: the
-- months of the parameters start_date, end_date (the first and the last day of the run's months; no
-- @-names in comments: the local BigQuery emulator counts those as parameters). Placeholder:
-- {source_table} (project.dataset.table of the CUR table). BigQuery Standard SQL; the DuckDB backend runs
-- its translation.
--
-- Sources: AWS's FOCUS export ("FOCUS 1.2 with AWS columns", Data Exports table dictionary) and the CUR 2.0
-- table dictionary (../shared/reference/aws_cur_and_focus.md); where this mapping differs from AWS's
-- export, the column says so and why.
--
-- Decisions:
-- * One FOCUS row per CUR line item, so that SUM(BilledCost) per day and currency equals the CUR table's
--   SUM(line_item_unblended_cost) -- the check the step runs. AWS's own FOCUS export drops
--   SavingsPlanNegation rows and folds the discounts; here every line item stays and the FOCUS costs say
--   what it means:
--   - BilledCost = line_item_unblended_cost on every row (covered usage at on-demand price, its negation
--     negative: together the invoiced 0).
--   - EffectiveCost (amortized): SavingsPlanCoveredUsage -> savings_plan_savings_plan_effective_cost,
--     DiscountedUsage -> reservation_effective_cost, SavingsPlanNegation and the commitment fees (RIFee,
--     SavingsPlanRecurringFee / UpfrontFee, which the covered rows carry amortized) -> 0, else the cost.
--   - ListCost: pricing_public_on_demand_cost on usage rows (0 for a negation: the list price is not
--     negated), else the cost. ContractedCost: the on-demand cost on usage rows (CUR 2.0 has no private
--     rate column here), 0 for a negation, else the cost.
-- * ChargeCategory from line_item_line_item_type: Usage, DiscountedUsage, SavingsPlanCoveredUsage -> Usage;
--   RIFee, SavingsPlanRecurringFee, SavingsPlanUpfrontFee -> Purchase; Tax -> Tax; Credit, Refund,
--   SavingsPlanNegation and the discounts (EdpDiscount, BundledDiscount, PrivateRateDiscount,
--   DistributorDiscount) -> Credit; Fee (e.g. the Support fee) -> Usage with ChargeFrequency Recurring
--   (FOCUS says Purchase only for what covers future charges, and the validator wants EffectiveCost 0 on
--   every Purchase row: a support fee is not amortized into anything); anything else -> Adjustment.
-- * ChargeClass = Correction for a line item whose usage starts before its billing period.
-- * ProviderName = InvoiceIssuerName = 'AWS' for AWS entities (FOCUS: BilledCost must be 0 when the two
--   differ); a Marketplace product's PublisherName is its seller (line_item_legal_entity).
-- * CommitmentDiscount*: reservation_reservation_a_r_n (Usage category: RIs) or
--   savings_plan_savings_plan_a_r_n (Spend category: Savings Plans); Status Used on covered usage rows.
-- * Tags: resource_tags with the CUR 2.0 prefix of user tags removed (user_team -> team), AWS tags keep
--   theirs (aws_created_by); cost categories go to x_CostCategories.
--
-- Known gaps of the columns kept in aws_billing_cost_daily (cur2_columns.json): no product_sku or
-- pricing_rate_code, so SkuId = "<product code>:<usage type>" and SkuPriceId adds the pricing term; no
-- savings_plan_used_commitment / reservation_unused_* columns, so unused commitment is not shown (AWS's
-- export adds Unused rows); no private rates (ContractedCost = on-demand); PricingCurrency = the line
-- item's currency (CUR 2.0 line items carry one currency); no resource names; RegionName from the table
-- below (the ID when unknown).

WITH
services AS (
  -- FOCUS 1.2 ServiceCategory / ServiceSubcategory per AWS product code (one pair per service).
  SELECT 'AmazonEC2' AS product_code, 'Compute' AS category, 'Virtual Machines' AS subcategory
  UNION ALL SELECT 'AWSLambda', 'Compute', 'Serverless Compute'
  UNION ALL SELECT 'AmazonECS', 'Compute', 'Containers'
  UNION ALL SELECT 'AmazonEKS', 'Compute', 'Containers'
  UNION ALL SELECT 'AWSFargate', 'Compute', 'Containers'
  UNION ALL SELECT 'ComputeSavingsPlans', 'Compute', 'Other (Compute)'
  UNION ALL SELECT 'AmazonS3', 'Storage', 'Object Storage'
  UNION ALL SELECT 'AmazonEFS', 'Storage', 'File Storage'
  UNION ALL SELECT 'AmazonFSx', 'Storage', 'File Storage'
  UNION ALL SELECT 'AWSBackup', 'Storage', 'Backup Storage'
  UNION ALL SELECT 'AmazonGlacier', 'Storage', 'Backup Storage'
  UNION ALL SELECT 'AmazonRDS', 'Databases', 'Relational Databases'
  UNION ALL SELECT 'AmazonAurora', 'Databases', 'Relational Databases'
  UNION ALL SELECT 'AmazonDynamoDB', 'Databases', 'NoSQL Databases'
  UNION ALL SELECT 'AmazonDocDB', 'Databases', 'NoSQL Databases'
  UNION ALL SELECT 'AmazonElastiCache', 'Databases', 'Caching'
  UNION ALL SELECT 'AmazonRedshift', 'Databases', 'Data Warehouses'
  UNION ALL SELECT 'AmazonTimestream', 'Databases', 'Time Series Databases'
  UNION ALL SELECT 'AmazonAthena', 'Analytics', 'Analytics Platforms'
  UNION ALL SELECT 'AWSGlue', 'Analytics', 'Data Processing'
  UNION ALL SELECT 'ElasticMapReduce', 'Analytics', 'Data Processing'
  UNION ALL SELECT 'AmazonKinesis', 'Analytics', 'Streaming Analytics'
  UNION ALL SELECT 'AmazonES', 'Analytics', 'Search'
  UNION ALL SELECT 'AmazonQuickSight', 'Analytics', 'Business Intelligence'
  UNION ALL SELECT 'AmazonCloudFront', 'Networking', 'Content Delivery'
  UNION ALL SELECT 'AWSDataTransfer', 'Networking', 'Network Connectivity'
  UNION ALL SELECT 'AmazonVPC', 'Networking', 'Network Infrastructure'
  UNION ALL SELECT 'AWSELB', 'Networking', 'Application Networking'
  UNION ALL SELECT 'AmazonRoute53', 'Networking', 'Network Routing'
  UNION ALL SELECT 'AWSDirectConnect', 'Networking', 'Network Connectivity'
  UNION ALL SELECT 'AWSWAF', 'Networking', 'Network Security'
  UNION ALL SELECT 'AmazonApiGateway', 'Integration', 'API Management'
  UNION ALL SELECT 'AmazonSNS', 'Integration', 'Messaging'
  UNION ALL SELECT 'AWSQueueService', 'Integration', 'Messaging'
  UNION ALL SELECT 'AmazonMQ', 'Integration', 'Messaging'
  UNION ALL SELECT 'AWSEvents', 'Integration', 'Messaging'
  UNION ALL SELECT 'AmazonStates', 'Integration', 'Workflow Orchestration'
  UNION ALL SELECT 'AmazonCloudWatch', 'Management and Governance', 'Observability'
  UNION ALL SELECT 'AWSCloudTrail', 'Management and Governance', 'Compliance'
  UNION ALL SELECT 'AWSConfig', 'Management and Governance', 'Compliance'
  UNION ALL SELECT 'AWSCostExplorer', 'Management and Governance', 'Cost Management'
  UNION ALL SELECT 'AWSSupportBusiness', 'Management and Governance', 'Support'
  UNION ALL SELECT 'AWSSupportEnterprise', 'Management and Governance', 'Support'
  UNION ALL SELECT 'AWSDeveloperSupport', 'Management and Governance', 'Support'
  UNION ALL SELECT 'awskms', 'Security', 'Secret Management'
  UNION ALL SELECT 'AWSSecretsManager', 'Security', 'Secret Management'
  UNION ALL SELECT 'AmazonGuardDuty', 'Security', 'Threat Detection and Response'
  UNION ALL SELECT 'AWSSecurityHub', 'Security', 'Security Posture Management'
  UNION ALL SELECT 'AmazonCognito', 'Identity', 'Identity and Access Management'
  UNION ALL SELECT 'AmazonECR', 'Developer Tools', 'Developer Platforms'
  UNION ALL SELECT 'CodeBuild', 'Developer Tools', 'Continuous Integration and Deployment'
  UNION ALL SELECT 'AWSCodePipeline', 'Developer Tools', 'Continuous Integration and Deployment'
  UNION ALL SELECT 'AmazonSageMaker', 'AI and Machine Learning', 'Machine Learning'
  UNION ALL SELECT 'AmazonBedrock', 'AI and Machine Learning', 'Generative AI'
  UNION ALL SELECT 'AmazonRekognition', 'AI and Machine Learning', 'Machine Learning'
  UNION ALL SELECT 'AmazonWorkSpaces', 'Compute', 'End User Computing'
  UNION ALL SELECT 'AWSAmplify', 'Web', 'Application Platforms'
),

regions AS (
  -- AWS's display names of its Regions.
  SELECT 'us-east-1' AS region_id, 'US East (N. Virginia)' AS region_name
  UNION ALL SELECT 'us-east-2', 'US East (Ohio)'
  UNION ALL SELECT 'us-west-1', 'US West (N. California)'
  UNION ALL SELECT 'us-west-2', 'US West (Oregon)'
  UNION ALL SELECT 'ca-central-1', 'Canada (Central)'
  UNION ALL SELECT 'sa-east-1', 'South America (Sao Paulo)'
  UNION ALL SELECT 'eu-west-1', 'Europe (Ireland)'
  UNION ALL SELECT 'eu-west-2', 'Europe (London)'
  UNION ALL SELECT 'eu-west-3', 'Europe (Paris)'
  UNION ALL SELECT 'eu-central-1', 'Europe (Frankfurt)'
  UNION ALL SELECT 'eu-central-2', 'Europe (Zurich)'
  UNION ALL SELECT 'eu-north-1', 'Europe (Stockholm)'
  UNION ALL SELECT 'eu-south-1', 'Europe (Milan)'
  UNION ALL SELECT 'ap-northeast-1', 'Asia Pacific (Tokyo)'
  UNION ALL SELECT 'ap-northeast-2', 'Asia Pacific (Seoul)'
  UNION ALL SELECT 'ap-northeast-3', 'Asia Pacific (Osaka)'
  UNION ALL SELECT 'ap-southeast-1', 'Asia Pacific (Singapore)'
  UNION ALL SELECT 'ap-southeast-2', 'Asia Pacific (Sydney)'
  UNION ALL SELECT 'ap-south-1', 'Asia Pacific (Mumbai)'
  UNION ALL SELECT 'ap-east-1', 'Asia Pacific (Hong Kong)'
  UNION ALL SELECT 'me-south-1', 'Middle East (Bahrain)'
  UNION ALL SELECT 'af-south-1', 'Africa (Cape Town)'
),

units AS (
  -- CUR pricing units -> FOCUS UnitFormat (unknown units pass through).
  SELECT 'Hrs' AS aws_unit, 'Hours' AS focus_unit
  UNION ALL SELECT 'Hours', 'Hours'
  UNION ALL SELECT 'GB-Mo', 'GB-Months'
  UNION ALL SELECT 'GB-Month', 'GB-Months'
  UNION ALL SELECT 'GB', 'GB'
  UNION ALL SELECT 'Requests', 'Requests'
  UNION ALL SELECT 'Lambda-GB-Second', 'GB-Seconds'
  UNION ALL SELECT 'Dollar', 'Dollars'
  UNION ALL SELECT 'Count', 'Count'
  UNION ALL SELECT 'IOs', 'IOs'
),

src AS (
  SELECT
    r.*,
    CASE
      WHEN r.line_item_line_item_type IN ('Usage', 'DiscountedUsage', 'SavingsPlanCoveredUsage', 'Fee') THEN 'Usage'
      WHEN r.line_item_line_item_type IN ('RIFee', 'SavingsPlanRecurringFee', 'SavingsPlanUpfrontFee') THEN 'Purchase'
      WHEN r.line_item_line_item_type = 'Tax' THEN 'Tax'
      WHEN r.line_item_line_item_type IN ('Credit', 'Refund', 'SavingsPlanNegation', 'EdpDiscount', 'BundledDiscount',
                                          'PrivateRateDiscount', 'DistributorDiscount') THEN 'Credit'
      ELSE 'Adjustment'
    END AS charge_category,
    NULLIF(r.line_item_resource_id, '') AS resource_id,
    COALESCE(NULLIF(r.reservation_reservation_a_r_n, ''), NULLIF(r.savings_plan_savings_plan_a_r_n, '')) AS commitment_id,
    -- Money as NUMERIC (FLOAT64 -> NUMERIC with 9 decimals on BigQuery and the emulator alike).
    PARSE_NUMERIC(CAST(r.line_item_unblended_cost AS STRING)) AS billed,
    PARSE_NUMERIC(CAST(CASE
      WHEN r.line_item_line_item_type = 'SavingsPlanCoveredUsage' THEN IFNULL(r.savings_plan_savings_plan_effective_cost, 0)
      WHEN r.line_item_line_item_type = 'DiscountedUsage' THEN IFNULL(r.reservation_effective_cost, 0)
      WHEN r.line_item_line_item_type IN ('SavingsPlanNegation', 'RIFee', 'SavingsPlanRecurringFee', 'SavingsPlanUpfrontFee') THEN 0
      ELSE r.line_item_unblended_cost
    END AS STRING)) AS effective,
    PARSE_NUMERIC(CAST(CASE
      WHEN r.line_item_line_item_type = 'SavingsPlanNegation' THEN 0
      WHEN r.line_item_line_item_type IN ('Usage', 'DiscountedUsage', 'SavingsPlanCoveredUsage')
        THEN IFNULL(r.pricing_public_on_demand_cost, r.line_item_unblended_cost)
      ELSE r.line_item_unblended_cost
    END AS STRING)) AS listed
  FROM `{source_table}` AS r
  WHERE r.billing_period BETWEEN FORMAT_DATE('%Y-%m', @start_date) AND FORMAT_DATE('%Y-%m', @end_date)
),

service_names AS (
  -- The product's name where the line item's own product map lacks it (tax, credit rows).
  SELECT s.line_item_product_code AS product_code, MAX(JSON_VALUE(s.product, '$.product_name')) AS product_name
  FROM src AS s
  GROUP BY s.line_item_product_code
),

priced AS (
  SELECT
    s.*,
    -- Priced rows (Usage, Purchase) carry a quantity; a Fee without one counts 1.
    IF(s.charge_category IN ('Usage', 'Purchase'), IFNULL(s.line_item_usage_amount, 1), NULL) AS pricing_quantity,
    IF(s.charge_category IN ('Usage', 'Purchase'), IFNULL(u.focus_unit, IFNULL(s.pricing_unit, 'Units')), NULL) AS pricing_unit_focus,
    IFNULL(IFNULL(JSON_VALUE(s.product, '$.product_name'), n.product_name), s.line_item_product_code) AS service_name,
    CONCAT(s.line_item_product_code, ':', IFNULL(NULLIF(s.line_item_usage_type, ''), s.line_item_line_item_type)) AS sku_id
  FROM src AS s
  LEFT JOIN service_names AS n ON n.product_code = s.line_item_product_code
  LEFT JOIN units AS u ON u.aws_unit = s.pricing_unit
)

SELECT
  -- x_UsageDate: the CUR table's UTC usage day (partition). Source: usage_date.
  k.usage_date AS x_UsageDate,
  -- x_Provider: constant.
  'aws' AS x_Provider,
  -- BilledCost: the line item's cost as invoiced. Source: line_item_unblended_cost.
  k.billed AS BilledCost,
  -- EffectiveCost: amortized (see the header). Source: savings_plan_savings_plan_effective_cost,
  -- reservation_effective_cost, line_item_unblended_cost, line_item_line_item_type.
  k.effective AS EffectiveCost,
  -- ListCost: public on-demand cost of usage (see the header). Source: pricing_public_on_demand_cost, line_item_unblended_cost.
  k.listed AS ListCost,
  -- ContractedCost: no private rates in the table, so as ListCost for usage, the cost otherwise. Source: as ListCost.
  k.listed AS ContractedCost,
  -- BillingAccountId: the payer (management) account. Source: bill_payer_account_id.
  k.bill_payer_account_id AS BillingAccountId,
  -- BillingAccountName. Source: bill_payer_account_name (the ID when missing).
  IFNULL(NULLIF(k.bill_payer_account_name, ''), k.bill_payer_account_id) AS BillingAccountName,
  -- BillingCurrency. Source: line_item_currency_code.
  k.line_item_currency_code AS BillingCurrency,
  -- BillingPeriodStart (UTC, inclusive). Source: bill_billing_period_start_date.
  k.bill_billing_period_start_date AS BillingPeriodStart,
  -- BillingPeriodEnd (UTC, exclusive). Source: bill_billing_period_end_date.
  k.bill_billing_period_end_date AS BillingPeriodEnd,
  -- ChargePeriodStart. Source: line_item_usage_start_date.
  k.line_item_usage_start_date AS ChargePeriodStart,
  -- ChargePeriodEnd (exclusive). Source: line_item_usage_end_date.
  k.line_item_usage_end_date AS ChargePeriodEnd,
  -- ChargeCategory (see the header). Source: line_item_line_item_type.
  k.charge_category AS ChargeCategory,
  -- ChargeClass: Correction when the usage lies before the billing period. Source: line_item_usage_start_date,
  -- bill_billing_period_start_date.
  IF(k.line_item_usage_start_date < k.bill_billing_period_start_date, 'Correction', NULL) AS ChargeClass,
  -- ChargeDescription. Source: line_item_line_item_description.
  k.line_item_line_item_description AS ChargeDescription,
  -- ChargeFrequency: commitment fees and Fee Recurring (an upfront fee One-Time), usage Usage-Based, the
  -- rest One-Time. Source: line_item_line_item_type.
  CASE
    WHEN k.line_item_line_item_type IN ('RIFee', 'SavingsPlanRecurringFee', 'Fee') THEN 'Recurring'
    WHEN k.charge_category = 'Usage' THEN 'Usage-Based'
    ELSE 'One-Time'
  END AS ChargeFrequency,
  -- ServiceName: the product's name. Source: product (product_name), line_item_product_code.
  k.service_name AS ServiceName,
  -- ServiceCategory: the services table above, Other when unknown (Marketplace products included).
  -- Source: line_item_product_code.
  IFNULL(sv.category, 'Other') AS ServiceCategory,
  -- ServiceSubcategory: as ServiceCategory. Source: line_item_product_code.
  IFNULL(sv.subcategory, 'Other (Other)') AS ServiceSubcategory,
  -- ProviderName: constant (equal to InvoiceIssuerName for AWS's own invoices).
  'AWS' AS ProviderName,
  -- PublisherName: AWS, or the Marketplace seller. Source: bill_billing_entity, line_item_legal_entity.
  IF(k.bill_billing_entity = 'AWS Marketplace', IFNULL(NULLIF(k.line_item_legal_entity, ''), 'AWS Marketplace'), 'AWS') AS PublisherName,
  -- InvoiceIssuerName: AWS for its own entities, else the invoicing entity. Source: bill_invoicing_entity.
  IF(k.bill_invoicing_entity IS NULL OR STARTS_WITH(k.bill_invoicing_entity, 'Amazon Web Services'), 'AWS', k.bill_invoicing_entity) AS InvoiceIssuerName,
  -- InvoiceId: blank until the period is final. Source: bill_invoice_id.
  NULLIF(k.bill_invoice_id, '') AS InvoiceId,
  -- RegionId. Source: product_region_code.
  NULLIF(k.product_region_code, '') AS RegionId,
  -- RegionName: AWS's display name (the ID when not in the regions table). Source: product_region_code.
  IFNULL(rg.region_name, NULLIF(k.product_region_code, '')) AS RegionName,
  -- AvailabilityZone. Source: line_item_availability_zone.
  NULLIF(k.line_item_availability_zone, '') AS AvailabilityZone,
  -- ResourceId. Source: line_item_resource_id.
  k.resource_id AS ResourceId,
  -- ResourceName: no resource names in the CUR. NULL.
  CAST(NULL AS STRING) AS ResourceName,
  -- ResourceType: the product family of a row with a resource. Source: product_product_family, line_item_resource_id.
  IF(k.resource_id IS NULL, NULL, IFNULL(NULLIF(k.product_product_family, ''), 'Other')) AS ResourceType,
  -- SkuId: product code and usage type (see Known gaps), NULL for Tax. Source: line_item_product_code, line_item_usage_type.
  IF(k.charge_category = 'Tax', NULL, k.sku_id) AS SkuId,
  -- SkuPriceId: SkuId and pricing term, priced rows only. Source: as SkuId, pricing_term.
  IF(k.pricing_quantity IS NULL, NULL, CONCAT(k.sku_id, ':', IFNULL(NULLIF(k.pricing_term, ''), 'OnDemand'))) AS SkuPriceId,
  -- SkuMeter: what is metered. Source: line_item_usage_type.
  IF(k.charge_category = 'Tax', NULL, IFNULL(NULLIF(k.line_item_usage_type, ''), k.line_item_line_item_type)) AS SkuMeter,
  -- SkuPriceDetails: not kept. NULL.
  CAST(NULL AS STRING) AS SkuPriceDetails,
  -- PricingCategory: Committed for reservations, Savings Plans and commitment purchases, Dynamic for Spot,
  -- else Standard; NULL for rows that are not priced. Source: pricing_term, line_item_line_item_type, line_item_usage_type.
  CASE
    WHEN k.pricing_quantity IS NULL THEN NULL
    WHEN k.commitment_id IS NOT NULL OR k.charge_category = 'Purchase' OR k.pricing_term = 'Reserved' THEN 'Committed'
    WHEN STRPOS(IFNULL(k.line_item_usage_type, ''), 'SpotUsage') > 0 THEN 'Dynamic'
    ELSE 'Standard'
  END AS PricingCategory,
  -- PricingQuantity: the usage amount (in pricing units) of priced rows. Source: line_item_usage_amount.
  k.pricing_quantity AS PricingQuantity,
  -- PricingUnit: FOCUS unit of the pricing unit. Source: pricing_unit.
  k.pricing_unit_focus AS PricingUnit,
  -- ListUnitPrice: ListCost / PricingQuantity. Source: pricing_public_on_demand_cost, line_item_usage_amount.
  CASE
    WHEN k.pricing_quantity IS NULL THEN NULL
    WHEN k.pricing_quantity <> 0 THEN CAST(k.listed AS FLOAT64) / k.pricing_quantity
    WHEN k.listed = 0 THEN 0
  END AS ListUnitPrice,
  -- ContractedUnitPrice: ContractedCost / PricingQuantity. Source: as ListUnitPrice.
  CASE
    WHEN k.pricing_quantity IS NULL THEN NULL
    WHEN k.pricing_quantity <> 0 THEN CAST(k.listed AS FLOAT64) / k.pricing_quantity
    WHEN k.listed = 0 THEN 0
  END AS ContractedUnitPrice,
  -- PricingCurrency: the line item's currency (see Known gaps). Source: line_item_currency_code.
  k.line_item_currency_code AS PricingCurrency,
  -- PricingCurrencyListUnitPrice: ListUnitPrice (one currency). Source: as ListUnitPrice.
  CASE
    WHEN k.pricing_quantity IS NULL THEN NULL
    WHEN k.pricing_quantity <> 0 THEN CAST(k.listed AS FLOAT64) / k.pricing_quantity
    WHEN k.listed = 0 THEN 0
  END AS PricingCurrencyListUnitPrice,
  -- PricingCurrencyContractedUnitPrice: ContractedUnitPrice (one currency). Source: as ListUnitPrice.
  CASE
    WHEN k.pricing_quantity IS NULL THEN NULL
    WHEN k.pricing_quantity <> 0 THEN CAST(k.listed AS FLOAT64) / k.pricing_quantity
    WHEN k.listed = 0 THEN 0
  END AS PricingCurrencyContractedUnitPrice,
  -- PricingCurrencyEffectiveCost: EffectiveCost (one currency). Source: as EffectiveCost.
  k.effective AS PricingCurrencyEffectiveCost,
  -- ConsumedQuantity: the usage amount of usage rows. Source: line_item_usage_amount.
  IF(k.charge_category = 'Usage', k.pricing_quantity, NULL) AS ConsumedQuantity,
  -- ConsumedUnit: as PricingUnit (CUR usage amounts are in pricing units). Source: pricing_unit.
  IF(k.charge_category = 'Usage', k.pricing_unit_focus, NULL) AS ConsumedUnit,
  -- SubAccountId: the linked (usage) account. Source: line_item_usage_account_id.
  k.line_item_usage_account_id AS SubAccountId,
  -- SubAccountName. Source: line_item_usage_account_name (the ID when missing).
  IF(k.line_item_usage_account_id IS NULL, NULL, IFNULL(NULLIF(k.line_item_usage_account_name, ''), k.line_item_usage_account_id)) AS SubAccountName,
  -- Tags: resource_tags with the "user_" prefix of user tags removed (see the header). Source: resource_tags.
  REGEXP_REPLACE(IFNULL(k.resource_tags, '{}'), r'([{,])"user_', r'\1"') AS Tags,
  -- CommitmentDiscountId: the reservation's or Savings Plan's ARN. Source: reservation_reservation_a_r_n,
  -- savings_plan_savings_plan_a_r_n.
  k.commitment_id AS CommitmentDiscountId,
  -- CommitmentDiscountName: not in the CUR. NULL.
  CAST(NULL AS STRING) AS CommitmentDiscountName,
  -- CommitmentDiscountCategory: Usage (reservation) or Spend (Savings Plan). Source: as CommitmentDiscountId.
  CASE
    WHEN NULLIF(k.reservation_reservation_a_r_n, '') IS NOT NULL THEN 'Usage'
    WHEN k.commitment_id IS NOT NULL THEN 'Spend'
  END AS CommitmentDiscountCategory,
  -- CommitmentDiscountType: AWS's kind of commitment. Source: as CommitmentDiscountId.
  CASE
    WHEN NULLIF(k.reservation_reservation_a_r_n, '') IS NOT NULL THEN 'Reserved Instance'
    WHEN k.commitment_id IS NOT NULL THEN 'Savings Plan'
  END AS CommitmentDiscountType,
  -- CommitmentDiscountStatus: Used on usage rows a commitment covered. Source: as CommitmentDiscountId.
  IF(k.commitment_id IS NOT NULL AND k.charge_category = 'Usage', 'Used', NULL) AS CommitmentDiscountStatus,
  -- CommitmentDiscountQuantity, priced rows with a commitment: reservations in hours (the usage amount),
  -- Savings Plans in money (the covered row's effective cost, the fee's cost). Source: line_item_usage_amount,
  -- savings_plan_savings_plan_effective_cost, line_item_unblended_cost.
  CASE
    WHEN k.commitment_id IS NULL OR k.pricing_quantity IS NULL THEN NULL
    WHEN NULLIF(k.reservation_reservation_a_r_n, '') IS NOT NULL THEN k.pricing_quantity
    WHEN k.line_item_line_item_type = 'SavingsPlanCoveredUsage' THEN IFNULL(k.savings_plan_savings_plan_effective_cost, 0)
    ELSE k.line_item_unblended_cost
  END AS CommitmentDiscountQuantity,
  -- CommitmentDiscountUnit: the pricing unit (reservations) or the currency (Savings Plans). Source: as above.
  CASE
    WHEN k.commitment_id IS NULL OR k.pricing_quantity IS NULL THEN NULL
    WHEN NULLIF(k.reservation_reservation_a_r_n, '') IS NOT NULL THEN k.pricing_unit_focus
    ELSE k.line_item_currency_code
  END AS CommitmentDiscountUnit,
  -- CapacityReservationId: not in the kept columns. NULL.
  CAST(NULL AS STRING) AS CapacityReservationId,
  -- CapacityReservationStatus: NULL, as CapacityReservationId.
  CAST(NULL AS STRING) AS CapacityReservationStatus,
  -- x_ServiceId: AWS's product code. Source: line_item_product_code.
  k.line_item_product_code AS x_ServiceId,
  -- x_CostType: GCP only. NULL.
  CAST(NULL AS STRING) AS x_CostType,
  -- x_LineItemType: AWS's line item type (Usage, SavingsPlanNegation, RIFee, ...). Source: line_item_line_item_type.
  k.line_item_line_item_type AS x_LineItemType,
  -- x_Credits: GCP only (AWS credits are rows of their own). NULL.
  CAST(NULL AS STRING) AS x_Credits,
  -- x_CreditAmount: GCP only. NULL.
  CAST(NULL AS NUMERIC) AS x_CreditAmount,
  -- x_CurrencyConversionRate: not in the CUR (one currency per line item). NULL.
  CAST(NULL AS FLOAT64) AS x_CurrencyConversionRate,
  -- x_ExportTime: GCP only. NULL.
  CAST(NULL AS TIMESTAMP) AS x_ExportTime,
  -- x_UsageType: AWS's usage type. Source: line_item_usage_type.
  NULLIF(k.line_item_usage_type, '') AS x_UsageType,
  -- x_Operation: AWS's operation. Source: line_item_operation.
  NULLIF(k.line_item_operation, '') AS x_Operation,
  -- x_CostCategories: AWS cost categories (JSON object). Source: cost_category.
  k.cost_category AS x_CostCategories
FROM priced AS k
LEFT JOIN services AS sv ON sv.product_code = k.line_item_product_code
LEFT JOIN regions AS rg ON rg.region_id = k.product_region_code
