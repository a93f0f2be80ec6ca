CREATE SCHEMA IF NOT EXISTS gdbs_qzk;

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_gdbs_sb (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    sxmc text,
    sqrlx text,
    sqrmc text,
    sqrzjlx text,
    sqrzjhm text,
    sbsj text,
    sbqd text,
    lxrsj text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_gdbs_sl (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    slsj text,
    slztdm text,
    sljgdm text,
    bslyy text,
    cnbjsj text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_gdbs_bjgz (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    bjgzsj text,
    bjclqd text,
    bjgzyy text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_gdbs_bjsl (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    bjslsj text,
    bjclqd text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_gdbs_tbcxsq (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    tbcxzl text,
    tbcxkssj text,
    tbcxsqly text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_gdbs_tbcxjg (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    tbcxjssj text,
    tbcxjg text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_gdbs_spcl (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    sphjdm text,
    spsj text,
    spbmdm text,
    spyj text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_gdbs_bj (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    bjsj text,
    bjjgdm text,
    zfhthyy text,
    bjbmdm text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_gdbs_lqdj (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    lqsj text,
    lqfs text,
    yjdh text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_hcp_pj (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    pjsj text,
    pjqd text,
    myd text,
    zbpj text,
    pjnr text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);

CREATE TABLE IF NOT EXISTS gdbs_qzk.ex_hcp_zgfk (
    sblsh text NOT NULL,
    sxbm text,
    xzqhdm text,
    xh integer NOT NULL,
    zgwcsj text,
    zgqk text,
    zgzrdw text,
    sync_sign char(1) NOT NULL DEFAULT '0',
    sync_msg text,
    sync_time timestamptz,
    insert_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sblsh, xh)
);
