from django.contrib.auth import views as auth_views
from django.urls import path
from mailapp import views

urlpatterns = [
    path("welcome/", views.welcome),
    path("welcome-async/", views.welcome_async),
    path("receipt-async/", views.receipt_async),
    path("crash/", views.crash),
    path(
        "password-reset/", auth_views.PasswordResetView.as_view(), name="password_reset"
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
]
