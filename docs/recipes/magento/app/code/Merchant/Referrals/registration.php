<?php
// The referral widget for Magento 2.4 (PHP 8.1+): app/code/Merchant/Referrals.
declare(strict_types=1);

use Magento\Framework\Component\ComponentRegistrar;

ComponentRegistrar::register(ComponentRegistrar::MODULE, 'Merchant_Referrals', __DIR__);
